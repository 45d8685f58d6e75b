"""Routing through conventions, on the pure pipeline (no broker).

The property test draws random convention histories and random events over real geography, runs
the pipeline, and checks every output against an oracle written independently of the router: a
scan of every convention, judged by its version in force at the event's time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from scolaflux.infra.settings import Settings
from scolaflux.processors.aggregation import Movement
from scolaflux.processors.bench_routing import measure_routing
from scolaflux.processors.conventions import Convention, convention_rules
from scolaflux.processors.delivery import DELIVERY_NAMESPACE, FIELDS_BY_TYPE, IDENTITY_FIELDS, delivery_id
from scolaflux.processors.history import ConventionHistory
from scolaflux.processors.identity import audit_key, pseudonym
from scolaflux.processors.live import in_force
from scolaflux.processors.routing import ConventionIndex, Locator
from scolaflux.processors.wiring import build_pipeline, master_key
from scolaflux.schemas.codec import audit_codec, delivery_codec
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.models import COLLEGE_LEVELS, FIRST_DEGREE_LEVELS, LEVELS, LYCEE_LEVELS, Event, EventType

from tests.conftest import make_event

PARIS = ZoneInfo("Europe/Paris")
GEO = load_geography(["42", "44", "69"])
SETTINGS = Settings(topic_prefix="prop", kafka_bootstrap="unused:9092")
KEY = master_key(SETTINGS)
LEVELS_OF = {"ecole": FIRST_DEGREE_LEVELS, "college": COLLEGE_LEVELS, "lycee": LYCEE_LEVELS}

# A small but real world: communes of three départements in two académies (Lyon 10, Nantes 17),
# two arrondissements of Lyon, and a sample of their schools of every kind.
COMMUNES = ["69123", "69266", "69259", "42218", "44109", "44162", "69381", "69387"]
DEPARTEMENTS = {"42": "10", "44": "17", "69": "10"}
REGIONS = {"84": "10", "52": "17"}
SCHOOLS = sorted(
    s.uai
    for code in ("69123", "69266", "69259", "42218", "44109", "44162")
    for kind in ("ecole", "college", "lycee")
    for s in [x for x in GEO.schools_in_commune(code) if x.kind == kind][:2]
)
UNKNOWN_SCHOOL = "0699999U"  # a valid UAI that is not in the reference geography
INES = [f"{n:09d}AB" for n in range(1, 7)]
EPOCH = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
CELL = frozenset({"school", "level"})


def moment(hours: int) -> dt.datetime:
    return EPOCH + dt.timedelta(hours=hours)


# --------------------------------------------------------------------------- strategies


@st.composite
def authorities(draw: st.DrawFn) -> tuple[str, str, str]:
    """(level, code, académie) of a real authority of the small world."""
    level = draw(st.sampled_from(["commune", "departement", "region"]))
    if level == "commune":
        code = draw(st.sampled_from(["69123", "69266", "69259", "42218", "44109", "44162"]))
        return level, code, DEPARTEMENTS[GEO.communes[code].departement]
    if level == "departement":
        code = draw(st.sampled_from(sorted(DEPARTEMENTS)))
        return level, code, DEPARTEMENTS[code]
    code = draw(st.sampled_from(sorted(REGIONS)))
    return level, code, REGIONS[code]


def located_in(uai: str, level: str, code: str) -> bool:
    commune = GEO.communes[GEO.schools[uai].commune]
    return {"commune": commune.code, "departement": commune.departement, "region": commune.region}[level] == code


@st.composite
def conventions(draw: st.DrawFn, convention_id: str, version: int, effective: dt.datetime | None) -> Convention:
    """A valid convention (by construction; its rules are checked too)."""
    level, code, academy = draw(authorities())
    identity = draw(
        st.sampled_from(
            ["nominative", "pseudonymised", "aggregated"] if level == "commune" else ["pseudonymised", "aggregated"]
        )
    )
    kinds = draw(st.lists(st.sampled_from(["ecole", "college", "lycee"]), min_size=1, max_size=3, unique=True))
    possible_levels = [lv for k in kinds for lv in LEVELS_OF[k]]
    levels = draw(st.none() | st.none() | st.lists(st.sampled_from(possible_levels), min_size=1, unique=True))
    basis = draw(st.sampled_from(["residence", "schooling", "both"]))
    schools = None
    candidates = [u for u in SCHOOLS if located_in(u, level, code) and GEO.schools[u].kind in kinds]
    if basis != "residence" and candidates and draw(st.booleans()):
        schools = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True))
    if identity == "aggregated":
        types = draw(
            st.lists(st.sampled_from(["enrolment", "transfer", "correction", "erasure"]), min_size=1, unique=True)
        )
        events = {
            t: draw(
                st.lists(
                    st.sampled_from(sorted({"school", "level"} & FIELDS_BY_TYPE[EventType(t)])), min_size=1, unique=True
                )
            )
            for t in types
        }
    else:
        types = draw(st.lists(st.sampled_from([t.value for t in EventType]), min_size=1, unique=True))
        events = {}
        for t in types:
            vocabulary = FIELDS_BY_TYPE[EventType(t)] - (IDENTITY_FIELDS if identity != "nominative" else frozenset())
            events[t] = draw(st.lists(st.sampled_from(sorted(vocabulary)), min_size=1, unique=True))
    start = dt.date(2026, 6, 1) + dt.timedelta(days=draw(st.integers(0, 90)))
    basis_article = "L131-6" if identity == "nominative" else draw(st.sampled_from(["L213-1", "L214-6", "L131-6"]))
    convention = Convention.model_validate(
        {
            "id": convention_id,
            "version": version,
            "academy": academy,
            "authority": {"level": level, "code": code},
            "legal_basis": [{"article": basis_article, "text": "…"}],
            "purposes": ["test"],
            "signed": dt.date(2026, 5, 1),
            "valid_from": start,
            "valid_until": start + dt.timedelta(days=draw(st.integers(0, 500))),
            "effective_from": effective,
            "status": draw(st.sampled_from(["signed"] * 6 + ["suspended", "draft", "ended"])),
            "population": {"basis": basis, "school_kinds": kinds, "levels": levels, "schools": schools},
            "events": events,
            "identity": identity,
            "aggregation": {"threshold": draw(st.integers(1, 6))} if identity == "aggregated" else None,
            "retention_days": 365,
        }
    )
    assert list(convention_rules(convention, GEO)) == [], list(convention_rules(convention, GEO))
    return convention


@st.composite
def histories(draw: st.DrawFn, convention_id: str) -> ConventionHistory:
    """1 to 3 versions; each amendment takes effect later (and may change anything but the id)."""
    count = draw(st.integers(1, 3))
    hours = sorted(draw(st.lists(st.integers(1, 24 * 500), min_size=count - 1, max_size=count - 1, unique=True)))
    history = ConventionHistory.first(draw(conventions(convention_id, 1, None)))
    for version, hour in enumerate(hours, start=2):
        if moment(hour) > history.latest.takes_effect:
            history = history.amended(draw(conventions(convention_id, version, moment(hour))))
    return history


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from([t.value for t in EventType]))
    school = draw(st.sampled_from([*SCHOOLS, UNKNOWN_SCHOOL]))
    known = GEO.schools.get(school)
    level = draw(st.sampled_from(LEVELS_OF[known.kind] if known else LEVELS))
    day = dt.date(2026, 9, 1)
    payloads = {
        "enrolment": {"level": level, "entry_date": day},
        "transfer": {"level": level, "exit_date": day, "destination_kind": "unknown"},
        "absence": {"date": day, "half_days": 1, "justified": True, "reason": "illness"},
        "correction": {"level": draw(st.none() | st.just(level)), "target_event_id": str(uuid.uuid4())},
        "erasure": {
            "scope": draw(st.sampled_from(["event", "pupil"])),
            "target_event_id": str(uuid.uuid4()),
            "reason": "x",
        },
    }
    when = moment(draw(st.integers(0, 24 * 500)))
    academy = known.academy if known and draw(st.integers(0, 9)) else draw(st.sampled_from(["10", "17"]))
    return make_event(
        event_type,
        ine=draw(st.sampled_from(INES)),
        commune=draw(st.sampled_from(COMMUNES)),
        school=school,
        payload=payloads[event_type],
        event_time=when,
        recorded_at=when,
        source={"system": "SIECLE", "academy": academy},
    )


# --------------------------------------------------------------------------- the oracle


def oracle_version(history: ConventionHistory, event: Event) -> Convention | None:
    """The version in force, by brute force: the latest to have taken effect."""
    effective = [v for v in history.versions if v.takes_effect <= event.event_time]
    return max(effective, key=lambda v: v.takes_effect) if effective else None


def oracle_delivers(version: Convention, event: Event) -> bool:
    """Whether a version delivers an event, written from the issue's words, not from the router."""
    if version.status != "signed":
        return False
    if not version.valid_from <= event.event_time.astimezone(PARIS).date() <= version.valid_until:
        return False
    if event.event_type not in version.events or event.source.academy != version.academy:
        return False
    school = GEO.schools.get(event.school)
    level = getattr(event.payload, "level", None)
    kind = school.kind if school else next((k for k, lv in LEVELS_OF.items() if level in lv), None)
    if kind not in version.population.school_kinds:
        return False
    allowed = version.population.levels or [lv for k in version.population.school_kinds for lv in LEVELS_OF[k]]
    if level is not None and level not in allowed:
        return False
    level_, code = version.authority.level, version.authority.code
    home = GEO.communes[event.pupil.residence_commune]
    resident = {
        "commune": code in (home.code, home.parent),
        "departement": home.departement == code,
        "region": home.region == code,
    }[level_]
    if version.population.schools is not None:
        schooled = event.school in version.population.schools
    else:
        schooled = school is not None and located_in(event.school, level_, code)
    basis = version.population.basis
    return (basis != "schooling" and resident) or (basis != "residence" and schooled)


# --------------------------------------------------------------------------- the property


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    histories=st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True).flatmap(
        lambda ns: st.tuples(*(histories(f"conv-{n}") for n in ns))
    ),
    events=st.lists(events(), min_size=1, max_size=25),
)
def test_no_delivery_ever_leaves_its_convention(histories, events) -> None:
    by_id = {h.id: h for h in histories}
    live = {h.id for h in in_force(by_id)}
    pipeline = build_pipeline(SETTINGS, GEO, ConventionIndex.build(in_force(by_id), KEY))
    subjects: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event in events:
        expected = set()
        for history in by_id.values():
            version = oracle_version(history, event)
            if history.id in live and version is not None and oracle_delivers(version, event):
                expected.add(history.id)
        delivered = set()
        for output in pipeline.route(event):
            ine = event.pupil.ine.encode()
            if output.topic == SETTINGS.audit_topic:
                audit = audit_codec().decode(output.value)
                assert audit["pupil"] == pseudonym(audit_key(KEY), event.pupil.ine) and ine not in output.value
                assert audit["convention_id"] in expected and audit["mode"] == "live"
                continue
            if output.topic == f"{SETTINGS.topic_prefix}.aggregation":
                move = Movement.from_bytes(output.value)
                assert ine not in output.value and by_id[move.convention_id].latest.identity
                assert oracle_version(by_id[move.convention_id], event).identity == "aggregated"
                delivered.add(move.convention_id)
                continue
            record = delivery_codec().decode(output.value)
            convention_id = record["convention_id"]
            assert output.topic == SETTINGS.delivery_topic(convention_id)
            version = oracle_version(by_id[convention_id], event)
            # judged by the version in force at the event's own time, inside its validity window
            assert version is not None and record["convention_version"] == version.version
            assert oracle_delivers(version, event)
            # only allowed fields, and every field it carries is named
            allowed = version.fields_for(event.event_type)
            assert set(record["fields"]) <= allowed
            data = {k for k in FIELDS_BY_TYPE[event.event_type] if record.get(k) is not None}
            assert data <= set(record["fields"])
            # no nominative identifier outside a nominative convention
            if version.identity == "nominative":
                assert record["subject"] == event.pupil.ine
            else:
                assert version.identity == "pseudonymised"
                assert ine not in output.value and str(event.event_id).encode() not in output.value
                assert not IDENTITY_FIELDS & set(record["fields"])
                assert record["subject"] != event.pupil.ine
                subjects[(convention_id, event.pupil.ine)].add(record["subject"])
            delivered.add(convention_id)
        # nothing missed, nothing extra: the index finds exactly what a scan of every convention finds
        assert delivered <= expected
        assert expected - delivered <= {
            cid for cid in expected if oracle_version(by_id[cid], event).identity == "aggregated"
        }  # an aggregated convention only counts the events that move a headcount
        event_note(f"deliveries per event: {min(len(delivered), 3)}")
    # one pseudonym per pupil per convention; two conventions never share a pupil's pseudonym
    assert all(len(s) == 1 for s in subjects.values())
    by_pupil: dict[str, list[str]] = defaultdict(list)
    for (_, ine), found in subjects.items():
        by_pupil[ine].extend(found)
    assert all(len(set(found)) == len(found) for found in by_pupil.values())


# --------------------------------------------------------------------------- examples


def _history(**changes) -> ConventionHistory:
    base = {
        "id": "commune-69123-test",
        "version": 1,
        "academy": "10",
        "authority": {"level": "commune", "code": "69123"},
        "legal_basis": [{"article": "L131-6", "text": "…"}],
        "purposes": ["test"],
        "signed": dt.date(2026, 5, 1),
        "valid_from": dt.date(2026, 7, 1),
        "valid_until": dt.date(2027, 8, 31),
        "status": "signed",
        "population": {"basis": "residence", "school_kinds": ["ecole", "college", "lycee"]},
        "events": {"enrolment": ["last_name", "school", "level"]},
        "identity": "nominative",
        "retention_days": 365,
    }
    base.update(changes)
    return ConventionHistory.first(Convention.model_validate(base))


def test_a_resident_of_an_arrondissement_is_a_resident_of_its_commune() -> None:
    index = ConventionIndex.build([_history()], KEY)
    event = make_event("enrolment", commune="69387", school="0690026D")
    (route,) = index.routes(event, Locator(GEO)(event))
    assert route.convention_id == "commune-69123-test" and route.fields == {"last_name", "school", "level"}


def test_the_same_pupil_gets_one_pseudonym_per_convention() -> None:
    histories = [
        _history(id=f"rhone-{n}", identity="pseudonymised", events={"enrolment": ["school"]}) for n in range(2)
    ]
    pipeline = build_pipeline(SETTINGS, GEO, ConventionIndex.build(histories, KEY))
    subjects = defaultdict(set)
    for _ in range(3):
        for output in pipeline.route(make_event("enrolment", commune="69123")):
            if output.topic != SETTINGS.audit_topic:
                record = delivery_codec().decode(output.value)
                subjects[record["convention_id"]].add(record["subject"])
    assert len(subjects["rhone-0"]) == len(subjects["rhone-1"]) == 1
    assert subjects["rhone-0"] != subjects["rhone-1"]


@given(st.uuids(), st.text(min_size=1, max_size=120))
def test_the_delivery_id_is_the_uuid5_of_event_and_convention(event_id, convention_id) -> None:
    expected = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{convention_id}"))
    assert delivery_id(event_id, convention_id) == delivery_id(str(event_id), convention_id) == expected


def test_the_cost_of_routing_depends_on_the_matching_conventions_not_on_how_many_exist() -> None:
    small, large = measure_routing(10, events=2_000), measure_routing(10_000, events=2_000)
    print(f"\nrouting: {small}\nrouting: {large}")  # figures only: speed is not asserted here
    assert small.routes_per_event > 0.3  # the events do match conventions…
    assert large.routes_per_event == small.routes_per_event  # …the same ones among 10 or 10,000…
    assert large.candidates_per_event == small.candidates_per_event  # …and the index examines no others
