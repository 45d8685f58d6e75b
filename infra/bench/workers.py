"""Worker processes the benchmark starts, and what they cost: peak memory of each, read at exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Worker:
    """A child process, its log, and (once stopped) its peak resident memory."""

    process: subprocess.Popen[bytes]
    log_path: Path
    max_rss: int | None = None

    def alive(self) -> bool:
        """Whether the process still runs (asked without reaping it: ``stop`` reads its rusage)."""
        if self.max_rss is not None or self.process.returncode is not None:
            return False
        try:
            found = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return found is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, SIGKILL after ``timeout``; returns the peak resident memory in bytes."""
        if self.max_rss is not None:
            return self.max_rss
        pid = self.process.pid
        if self.process.returncode is None:
            os.kill(pid, signal.SIGTERM)
        self.max_rss = wait_rusage(self.process, timeout)
        return self.max_rss

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the worker's log (for an error message)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


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


def wait_rusage(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Reap a child and return its own peak resident memory (bytes), from ``wait4``'s rusage."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss * 1024  # Linux reports kilobytes
        if time.monotonic() > deadline:
            os.kill(process.pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


def run_measured(args: Sequence[str], env: dict[str, str], log_path: Path, timeout: float) -> tuple[int, int, float]:
    """Run ``python ARGS`` to its end: exit code, peak resident memory (bytes) and seconds."""
    started = time.perf_counter()
    worker = start(args, env, log_path)
    try:
        rss = wait_rusage(worker.process, timeout)
    finally:
        if worker.process.returncode is None:
            worker.process.kill()
    return worker.process.returncode or 0, rss, time.perf_counter() - started
