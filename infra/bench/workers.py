"""Worker processes the benchmark starts, and what they cost: the peak resident memory of each,
and the CPU time they use.

The peak is the kernel's high-water mark of the process's own memory (``VmHWM`` in
``/proc/PID/status``), sampled while it runs. ``wait4``'s ``ru_maxrss`` is not used: on Linux it
keeps the resident size the child had before ``exec``, a copy of this (large) benchmark process.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_SECONDS = 0.1
_HWM = re.compile(rb"^VmHWM:\s+(\d+) kB", re.MULTILINE)


def high_water_mark(pid: int) -> int | None:
    """The peak resident memory (bytes) of a running process so far, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return None
    found = _HWM.search(status)
    return int(found[1]) * 1024 if found else None


def cpu_seconds(pid: int) -> float | None:
    """The CPU time (user + system, seconds, every thread) a running process has used so far,
    or None once it is gone: ``utime`` and ``stime``, fields 14 and 15 of ``/proc/PID/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """The CPU time all the machine's cores have spent busy so far, whoever used it: the first
    line of ``/proc/stat``, every state but idle and waiting for I/O."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    """The CPU time some processes, grouped by name, and the whole machine use from ``start`` on."""

    pids: dict[str, list[int]]
    _since: float = 0.0
    _before: dict[str, float] = field(default_factory=dict)

    def _read(self) -> dict[str, float]:
        reading = {name: sum(cpu_seconds(pid) or 0.0 for pid in pids) for name, pids in self.pids.items()}
        reading["machine"] = busy_seconds()
        return reading

    def start(self) -> CpuUse:
        """Start counting."""
        self._since, self._before = time.monotonic(), self._read()
        return self

    def used(self) -> tuple[dict[str, float], float]:
        """The CPU seconds each group (and ``machine``, every process) used since ``start``, and the
        seconds elapsed. Read it while the processes still run."""
        now = self._read()
        return {name: now[name] - self._before[name] for name in now}, time.monotonic() - self._since


@dataclass
class Worker:
    """A child process, its log, and the peak resident memory seen while it ran."""

    process: subprocess.Popen[bytes]
    log_path: Path
    peak: int = 0
    _sampler: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._sampler = threading.Thread(target=self._sample, name=f"hwm-{self.process.pid}", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self.process.returncode is None:
            mark = high_water_mark(self.process.pid)
            if mark is None:
                return
            self.peak = max(self.peak, mark)
            time.sleep(SAMPLE_SECONDS)

    def cpu_seconds(self) -> float:
        """The CPU time the process has used so far (0 once it is gone)."""
        return cpu_seconds(self.process.pid) or 0.0

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (SIGKILL after ``timeout``); returns the peak resident memory in bytes."""
        mark = high_water_mark(self.process.pid)  # the last reading before shutdown
        self.peak = max(self.peak, mark or 0)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.peak

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself (killed after ``timeout``); returns its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def failure(self) -> str:
        """The last error line of the worker's log (for an error message)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        lines = [line.strip(" │╭╰─") for line in text.splitlines() if line.strip(" │╭╰─")]
        errors = [line for line in lines if re.search(r"(Error|Exception)\b", line)]
        return (errors or lines or ["(empty log)"])[-1][:300]


def start(args: Sequence[str], env: dict[str, str], log_path: Path) -> Worker:
    """Start ``python ARGS`` with ``env`` added to this environment; output goes to ``log_path``.

    The child runs in the log's folder, so what it leaves in its working directory (a faust
    worker's data folder) stays with the benchmark's files.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **env},
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(process, log_path)


def run_measured(args: Sequence[str], env: dict[str, str], log_path: Path, timeout: float) -> tuple[int, int, float]:
    """Run ``python ARGS`` to its end: exit code, peak resident memory (bytes) and seconds.

    The peak is sampled every ``SAMPLE_SECONDS``: growth in the very last interval may be missed.
    """
    started = time.perf_counter()
    worker = start(args, env, log_path)
    code = worker.wait(timeout)
    if worker._sampler is not None:
        worker._sampler.join(1)
    return code, worker.peak, time.perf_counter() - started


@dataclass
class Profiler:
    """A py-spy recorder attached to a worker."""

    process: subprocess.Popen[bytes]
    output: Path


def start_profiler(worker: Worker, output: Path) -> Profiler | None:
    """Attach py-spy (the ``bench`` extra) to a running worker; None if py-spy is not installed."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(worker.process.pid), "--rate", "200", "--output", str(output)]
    return Profiler(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), output)


def stop_profiler(profiler: Profiler | None) -> str:
    """Stop recording (py-spy writes its flame graph on SIGINT); where it is, or why there is none."""
    if profiler is None:
        return "py-spy not installed (pip install -e '.[bench]')"
    profiler.process.send_signal(signal.SIGINT)
    try:
        profiler.process.wait(60)
    except subprocess.TimeoutExpired:
        profiler.process.kill()
    return str(profiler.output) if profiler.output.exists() else "py-spy wrote nothing (ptrace refused?)"
