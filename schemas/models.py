"""Pydantic models of the contracts in ``avro/``: they validate what the Avro schemas cannot.

``Event.from_avro`` / ``Event.to_avro`` convert to and from the dicts that the codec reads and
writes, so one model validates events whatever way they came in (Kafka, CSV import, HTTP ingest).
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .identifiers import normalise_commune, normalise_ine, normalise_uai

UAI = Annotated[str, AfterValidator(normalise_uai)]
INE = Annotated[str, AfterValidator(normalise_ine)]
CommuneCode = Annotated[str, AfterValidator(normalise_commune)]

FIRST_DEGREE_LEVELS = ("PS", "MS", "GS", "CP", "CE1", "CE2", "CM1", "CM2")
COLLEGE_LEVELS = ("6e", "5e", "4e", "3e")
LYCEE_LEVELS = ("2nde", "1re", "Tle")
LEVELS = FIRST_DEGREE_LEVELS + COLLEGE_LEVELS + LYCEE_LEVELS
Level = Literal["PS", "MS", "GS", "CP", "CE1", "CE2", "CM1", "CM2", "6e", "5e", "4e", "3e", "2nde", "1re", "Tle"]
Track = Literal["GT", "PRO", "CAP"]
Boarding = Literal["day", "half_board", "boarder"]
"""Régime: externe, demi-pensionnaire (school lunch, run by the authority that runs the school), interne."""

EARLIEST_DATE = dt.date(1990, 1, 1)
LATEST_DATE = dt.date(2100, 12, 31)


def _sane_date(value: dt.date) -> dt.date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"date must be between {EARLIEST_DATE} and {LATEST_DATE}")
    return value


def _aware_millis(value: dt.datetime) -> dt.datetime:
    """Time-zone aware, in range, truncated to the millisecond that Avro keeps."""
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone")
    _sane_date(value.date())
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


SaneDate = Annotated[dt.date, AfterValidator(_sane_date)]
Timestamp = Annotated[dt.datetime, AfterValidator(_aware_millis)]


class EventType(StrEnum):
    ENROLMENT = "enrolment"
    TRANSFER = "transfer"
    ABSENCE = "absence"
    CORRECTION = "correction"
    ERASURE = "erasure"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Model):
    system: Literal["ONDE", "SIECLE", "ATTENDANCE", "SNAPSHOT", "INGEST"]
    academy: Annotated[str, Field(pattern=r"^[0-9]{2}$")]


class Pupil(_Model):
    ine: INE
    birth_date: SaneDate
    residence_commune: CommuneCode
    last_name: str | None = None
    first_name: str | None = None
    sex: Literal["F", "M"] | None = None


class Enrolment(_Model):
    """Admission or inscription into a school at a level (admission, inscription)."""

    level: Level
    track: Track | None = None
    entry_date: SaneDate
    origin_school: UAI | None = None
    boarding: Boarding | None = None  # since event schema v2; None when the source does not say


class Transfer(_Model):
    """Radiation from a school (certificat de radiation), with the destination when known."""

    level: Level
    exit_date: SaneDate
    destination_kind: Literal["school", "commune", "abroad", "home_instruction", "unknown"]
    destination_school: UAI | None = None
    destination_commune: CommuneCode | None = None

    @model_validator(mode="after")
    def _destination_matches_kind(self) -> Transfer:
        if self.destination_kind == "school" and self.destination_school is None:
            raise ValueError("destination_school is required when destination_kind is 'school'")
        if self.destination_kind == "unknown" and (self.destination_school or self.destination_commune):
            raise ValueError("an unknown destination cannot name a school or a commune")
        return self


class Absence(_Model):
    """Half-days absent on a date (demi-journées d'absence)."""

    date: SaneDate
    half_days: Annotated[int, Field(ge=1, le=2)]
    justified: bool
    reason: Literal["illness", "family", "transport", "other_valid", "unjustified"]

    @model_validator(mode="after")
    def _reason_matches_justification(self) -> Absence:
        if self.justified == (self.reason == "unjustified"):
            raise ValueError("reason 'unjustified' goes with justified=false, and only with it")
        return self


class Correction(_Model):
    """A source fixed an earlier record; the envelope carries the corrected values."""

    target_event_id: str | None = None
    level: Level | None = None
    track: Track | None = None
    changed_fields: list[str] = Field(default_factory=list)


class Erasure(_Model):
    """A source erased one record (scope ``event``) or everything about a pupil (``pupil``)."""

    target_event_id: str | None = None
    scope: Literal["event", "pupil"]
    reason: str

    @model_validator(mode="after")
    def _event_scope_names_target(self) -> Erasure:
        if self.scope == "event" and not self.target_event_id:
            raise ValueError("an erasure of scope 'event' must name target_event_id")
        return self


Payload = Enrolment | Transfer | Absence | Correction | Erasure
PAYLOAD_TYPES: dict[EventType, type[_Model]] = {
    EventType.ENROLMENT: Enrolment,
    EventType.TRANSFER: Transfer,
    EventType.ABSENCE: Absence,
    EventType.CORRECTION: Correction,
    EventType.ERASURE: Erasure,
}
AVRO_NAMESPACE = "fr.scolaflux"


class Event(_Model):
    """The envelope shared by every source event, and its payload."""

    event_id: uuid.UUID
    event_type: EventType
    event_time: Timestamp
    recorded_at: Timestamp
    source: Source
    pupil: Pupil
    school: UAI
    school_year: Annotated[int, Field(ge=1990, le=2100)]
    payload: Payload

    @model_validator(mode="before")
    @classmethod
    def _payload_by_type(cls, data: Any) -> Any:
        """Validate the payload as the model its event_type names (no guessing between them)."""
        if isinstance(data, dict) and isinstance(data.get("payload"), dict):
            try:
                model = PAYLOAD_TYPES[EventType(data.get("event_type"))]
            except ValueError as exc:
                raise ValueError(f"event_type must be one of {[t.value for t in EventType]}") from exc
            data = {**data, "payload": model.model_validate(data["payload"])}
        return data

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Event:
        if not isinstance(self.payload, PAYLOAD_TYPES[self.event_type]):
            raise ValueError(f"payload does not match event_type {self.event_type.value}")
        return self

    @model_validator(mode="after")
    def _nothing_before_birth(self) -> Event:
        """Impossible dates: nothing happens at school to a pupil not yet born (no value in the message)."""
        dates = {"event_time": self.event_time.date()}
        dates |= {f"payload.{n}": getattr(self.payload, n, None) for n in ("entry_date", "exit_date", "date")}
        for name, day in dates.items():
            if day is not None and day < self.pupil.birth_date:
                raise ValueError(f"{name} is before pupil.birth_date")
        return self

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Event:
        """Validate a record as the codec decoded it."""
        return cls.model_validate(record)

    def to_avro(self) -> dict[str, Any]:
        """The record for the codec, with the payload's union branch named explicitly."""
        data = self.model_dump(mode="python")
        data["event_id"] = str(self.event_id)
        data["event_type"] = self.event_type.value
        branch = f"{AVRO_NAMESPACE}.{type(self.payload).__name__}"
        data["payload"] = (branch, data["payload"])
        return data
