"""A plain faust pass-through agent, the reference line of the faust stream machinery itself.

It reads each record and awaits its send to another topic, faust's default way. Run as a real
worker process: ``python -m scolaflux.infra.bench.passthrough BOOTSTRAP SOURCE SINK APP_ID DATA_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import faust


def create_passthrough_app(bootstrap: str, source: str, sink: str, app_id: str, data_dir: Path) -> faust.App:
    """A faust app with one agent that forwards every record of ``source`` to ``sink``."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(data_dir),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inbound = app.topic(source, **raw)
    outbound = app.topic(sink, **raw)

    @app.agent(inbound, name="forward")
    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await outbound.send(key=event.key, value=event.value)

    return app


def main(argv: list[str]) -> None:
    """Run the pass-through worker until SIGTERM."""
    bootstrap, source, sink, app_id, data_dir = argv
    app = create_passthrough_app(bootstrap, source, sink, app_id, Path(data_dir))
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
