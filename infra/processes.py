"""Child processes of the feed (the processor, views, servers), started with the parent's settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .settings import Settings, settings_env


def start_process(args: list[str], settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``scolaflux ARGS…`` as a child with the same settings; its output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "scolaflux.infra.cli", *args],
            env={**os.environ, **settings_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_processor(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``scolaflux process`` (a faust worker) as a child with the same settings."""
    return start_process(["process"], settings, log_path)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a child: SIGTERM (a faust worker shuts down cleanly on it), SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
