"""The ingest endpoint: source systems that can call out POST their events as JSON.

``POST /events`` takes one event (a JSON object) or a batch (a JSON array of them), in the JSON
form of ``schemas.models.Event``. It answers only once the broker has acknowledged every accepted
event (or has failed to), and says per item what happened:

- ``200``: every event accepted (acknowledged by the broker);
- ``207``: a batch in part accepted, in part rejected (``items`` says which, and why);
- ``422``: nothing accepted: every event broke a rule; each error names the field and the rule;
- ``503``: the broker did not acknowledge some events in time (``failed`` items): send them again,
  the event id makes a repeat harmless;
- ``400`` (not JSON, not an object or array), ``401`` (no or unknown token), ``413`` (batch too big).

Each source system (an académie's SIECLE, a commune's attendance software...) has its own token,
sent as ``Authorization: Bearer <token>``. Tokens are kept as SHA-256 digests in the sources file
and compared in constant time; they are random 256-bit values (``new_token``), so a fast digest
is enough (a slow password hash protects guessable secrets, which these are not). A source may
only send events of its own académie, and of the source systems it is declared for. A source may
list several digests (rotation: add the new one, hand the token over, remove the old one); the
server reads the file again when it changes (``WatchedRegistry``), without a restart.

Rejected items also go to the dead-letter topic (raw JSON, reason in headers), as every other
rejected input does. No pupil identifier is logged; error messages never repeat input values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..infra.kafka import ERROR_HEADER, ORIGIN_HEADER, REASON_HEADER
from ..infra.metrics import Metrics
from ..infra.reload import Reloaded
from ..schemas.errors import ConfigError
from ..schemas.models import Event
from ..schemas.validation import encode_event
from .kafka import Delivery, EventProducer

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
SYSTEMS = ("ONDE", "SIECLE", "ATTENDANCE", "SNAPSHOT", "INGEST")
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# --------------------------------------------------------------------------- sources and tokens


class SourceSpec(BaseModel):
    """One source allowed to call the endpoint (a line of the sources file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    academy: str = Field(pattern=r"^[0-9]{2}$")
    systems: tuple[Literal["ONDE", "SIECLE", "ATTENDANCE", "SNAPSHOT", "INGEST"], ...] = SYSTEMS
    token_sha256: tuple[Digest, ...] = Field(min_length=1)
    """One digest, or a list of them (each a valid token: a rotation in progress)."""

    @field_validator("token_sha256", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return value if isinstance(value, list | tuple) else [value]


class SourcesFile(BaseModel):
    """The sources file: ``sources: [{id, academy, systems, token_sha256}, ...]`` (quote the
    académie code and the digest: YAML would read ``01`` or an all-digit digest as numbers)."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SourceSpec]


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 digest of a token, as stored in the sources file."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SourceRegistry:
    """The sources allowed to call, and who a token belongs to."""

    sources: tuple[SourceSpec, ...]

    @classmethod
    def load(cls, path: Path) -> SourceRegistry:
        """Read a sources file; ``ConfigError`` names the file, the field and the rule broken."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(str(path), "(file)", f"cannot be read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), "(file)", f"is not valid YAML: {exc}") from None
        try:
            parsed = SourcesFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise ConfigError(str(path), where, first["msg"]) from None
        ids = [s.id for s in parsed.sources]
        if len(set(ids)) != len(ids):
            raise ConfigError(str(path), "sources.id", "each source id must appear once")
        return cls(tuple(parsed.sources))

    def authenticate(self, token: str) -> SourceSpec | None:
        """The source whose token this is, or None. Compares with every digest, in constant time."""
        digest = token_digest(token)
        found = None
        for source in self.sources:
            for known in source.token_sha256:
                if hmac.compare_digest(digest, known):
                    found = source
        return found


class WatchedRegistry:
    """The sources file, read again when it changes (a token rotates without a restart). A file that
    became invalid refuses every call (401) until it is fixed; the error is logged."""

    def __init__(self, path: Path) -> None:
        self._file = Reloaded(path, SourceRegistry.load)

    def authenticate(self, token: str) -> SourceSpec | None:
        try:
            registry = self._file.get()
        except ConfigError as error:
            log.error("ingest sources not reloaded: %s", error)
            return None
        return registry.authenticate(token)


# --------------------------------------------------------------------------- items (pure)


@dataclass
class ItemResult:
    """What happened to one item of a request."""

    index: int
    status: Literal["accepted", "rejected", "failed"]
    event_id: str | None = None
    errors: list[dict[str, str]] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.errors:
            out["errors"] = self.errors
        return out


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{field, rule}`` pairs, without the input values."""
    return [
        {"field": ".".join(str(p) for p in item["loc"]) or "event", "rule": item["msg"]}
        for item in error.errors(include_input=False, include_url=False)
    ]


def check_item(item: Any, source: SourceSpec) -> Event | list[dict[str, str]]:
    """A valid event this source may send, or the list of rules it breaks."""
    if not isinstance(item, dict):
        return [{"field": "event", "rule": "must be a JSON object"}]
    try:
        event = Event.model_validate(item)
    except ValidationError as error:
        return field_errors(error)
    problems = []
    if event.source.academy != source.academy:
        problems.append(
            {"field": "source.academy", "rule": f"this source may only send events of académie {source.academy}"}
        )
    if event.source.system not in source.systems:
        allowed = ", ".join(source.systems)
        problems.append({"field": "source.system", "rule": f"this source may only send events of {allowed}"})
    return problems or event


def response_status(results: Sequence[ItemResult]) -> int:
    """The HTTP status of a request from its items' results."""
    statuses = {r.status for r in results}
    if "failed" in statuses:
        return 503
    if statuses == {"accepted"}:
        return 200
    return 207 if "accepted" in statuses else 422


# --------------------------------------------------------------------------- the app


def create_app(
    registry: SourceRegistry | WatchedRegistry,
    producer: EventProducer,
    deadletter_topic: str,
    ack_timeout: float = 30.0,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The ingest application, writing accepted events through ``producer`` (counted in ``metrics``)."""
    app = FastAPI(title="scolaflux ingest", version="1")
    metrics = metrics or Metrics()
    app.state.metrics = metrics

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/events")
    async def post_events(request: Request) -> JSONResponse:
        source = registry.authenticate(_bearer(request))
        if source is None:
            return _problem(401, "a valid Bearer token of a declared source is required")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _problem(400, "the body must be JSON: one event (an object) or a batch (an array)")
        single = isinstance(body, dict)
        items = [body] if single else body
        if not isinstance(items, list):
            return _problem(400, "the body must be one event (an object) or a batch (an array)")
        if len(items) > MAX_BATCH:
            return _problem(413, f"a batch holds at most {MAX_BATCH} events")
        results = await run_in_threadpool(_ingest, items, source, producer, deadletter_topic, ack_timeout, metrics)
        status = response_status(results)
        counts = {s: sum(r.status == s for r in results) for s in ("accepted", "rejected", "failed")}
        log.info("ingest from %s: %s", source.id, counts)
        if single:
            return JSONResponse(results[0].as_json(), status_code=status)
        return JSONResponse({**counts, "items": [r.as_json() for r in results]}, status_code=status)

    return app


def _ingest(
    items: list[Any],
    source: SourceSpec,
    producer: EventProducer,
    deadletter_topic: str,
    ack_timeout: float,
    metrics: Metrics,
) -> list[ItemResult]:
    """Send the valid items, dead-letter the others, wait for the broker's answers."""
    results: list[ItemResult] = []
    sent: list[tuple[ItemResult, Delivery, str]] = []
    for index, item in enumerate(items):
        checked = check_item(item, source)
        if isinstance(checked, Event):
            result = ItemResult(index, "accepted", str(checked.event_id))
            delivery = producer.send_encoded(checked.pupil.ine.encode(), encode_event(checked))
            sent.append((result, delivery, checked.event_type.value))
        else:
            result = ItemResult(index, "rejected", _event_id(item), checked)
            _dead_letter(producer, deadletter_topic, item, checked, source)
            metrics.dead_lettered("ingest", "invalid")
        results.append(result)
    producer.wait([d for _, d, _ in sent], ack_timeout)
    for result, delivery, event_type in sent:
        if not delivery.done or delivery.error:
            result.status = "failed"
            result.errors = [{"field": "event", "rule": "not acknowledged by the broker in time: send it again"}]
            metrics.rejected("ingest", "not_acknowledged")
        else:
            metrics.event_produced(producer.topic, event_type)
    return results


def _dead_letter(
    producer: EventProducer, topic: str, item: Any, errors: list[dict[str, str]], source: SourceSpec
) -> None:
    reason = "; ".join(f"{e['field']}: {e['rule']}" for e in errors)
    headers = [
        (REASON_HEADER, b"invalid"),
        (ERROR_HEADER, reason.encode()),
        (ORIGIN_HEADER, f"ingest:{source.id}".encode()),
    ]
    producer.send_encoded(
        None, json.dumps(item, ensure_ascii=False, default=str).encode(), topic=topic, headers=headers
    )


def _event_id(item: Any) -> str | None:
    value = item.get("event_id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)
