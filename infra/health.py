"""Each process's HTTP endpoints for operators: ``/metrics``, ``/livez`` and ``/readyz``.

- ``/livez`` answers 200 while the process is alive in the sense that matters (its loop turns:
  see ``Heartbeat``), 503 otherwise: an orchestrator restarts a process that fails it.
- ``/readyz`` answers 200 once the process does its job (its partitions are assigned, its first
  sample is taken…), 503 before: an orchestrator keeps it out of rotation until then.
- ``/metrics`` is the process's ``Metrics`` registry in Prometheus text format.

Both checks answer a small JSON body naming each check and whether it passed.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from .metrics import Metrics

Check = Callable[[], bool]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Heartbeat:
    """A liveness check: alive while ``beat()`` was called within the last ``max_age`` seconds."""

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self._last = time.monotonic()

    def beat(self) -> None:
        """The loop turned."""
        self._last = time.monotonic()

    def __call__(self) -> bool:
        return time.monotonic() - self._last <= self.max_age


class Flag:
    """A readiness check that passes once ``set()`` (and until ``clear()``)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """The process is ready."""
        self._event.set()

    def clear(self) -> None:
        """The process is not ready any more (e.g. its partitions were revoked)."""
        self._event.clear()

    def __call__(self) -> bool:
        return self._event.is_set()


@dataclass
class Probes:
    """What a long-running process updates for its endpoints: a heartbeat its loop beats, a flag it
    sets once it does its job (e.g. its partitions are assigned)."""

    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat(max_age=60.0))
    ready: Flag = field(default_factory=Flag)

    def health(self) -> Health:
        """The checks: live while the loop beats, ready once the flag is set."""
        return Health(liveness={"loop": self.heartbeat}, readiness={"ready": self.ready})


@dataclass
class Health:
    """The named liveness and readiness checks of one process (no check: passes)."""

    liveness: dict[str, Check] = field(default_factory=dict)
    readiness: dict[str, Check] = field(default_factory=dict)

    def live(self) -> tuple[bool, dict[str, bool]]:
        """Whether every liveness check passes, and each one's result."""
        return _run(self.liveness)

    def ready(self) -> tuple[bool, dict[str, bool]]:
        """Whether the process is live and every readiness check passes, and each one's result."""
        alive, live_results = self.live()
        ready, results = _run(self.readiness)
        return alive and ready, {**live_results, **results}


def _run(checks: dict[str, Check]) -> tuple[bool, dict[str, bool]]:
    results = {}
    for name, check in checks.items():
        try:
            results[name] = bool(check())
        except Exception:  # a check that raises has failed; the endpoint must still answer
            results[name] = False
    return all(results.values()), results


def wsgi_app(metrics: Metrics, health: Health) -> WsgiApp:
    """The WSGI application serving ``/metrics``, ``/livez`` and ``/readyz``."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/livez", "/readyz"):
            ok, results = health.live() if path == "/livez" else health.ready()
            body = json.dumps({"ok": ok, "checks": results}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /livez or /readyz\n"]

    return app


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Scrapes every few seconds are not worth a log line."""


@dataclass
class Endpoints:
    """A running endpoint server; ``port`` is the one it listens on."""

    port: int
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def serve(metrics: Metrics, health: Health, port: int = 0, addr: str = "127.0.0.1") -> Endpoints:
    """Serve ``/metrics``, ``/livez`` and ``/readyz`` from a daemon thread (port 0: a free one)."""
    server = make_server(addr, port, wsgi_app(metrics, health), _ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="health-endpoints", daemon=True)
    thread.start()
    return Endpoints(server.server_port, server, thread)
