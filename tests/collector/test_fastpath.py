"""The decoder's fast path gives exactly what the pydantic path gives, for any payload: the same
point (fields, their types and order, tags, line) or the same dead letter, and the same counted
dropped fields; it covers every kind, reads the benchmark's and the simulators' payloads, and
leaves a kind to pydantic when the model has a field it does not understand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.backlog import balanced_parks, telemetry
from collector.decode import Decoder
from collector.fastpath import fast_readers
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.schema import (
    KIND_MODELS,
    ChargerStatus,
    EpochMillis,
    OcppErrorCode,
    parse_topic,
)
from parkwatch.settings import IngestSettings

NOW_S = 1_700_000_000.0
NOW_MS = 1_700_000_000_000
MODELS = {kind.value: model for kind, model in KIND_MODELS.items()}
READERS = fast_readers(MODELS)


def topic(kind: str) -> str:
    """A telemetry topic of one device of ``kind``."""
    return f"parks/caohejing/{kind}/d-1/telemetry"


def both(kind: str, payload: bytes) -> tuple[tuple[str, list[float]], tuple[str, list[float]]]:
    """Decode with and without the fast path: each result's repr and the fields dropped."""
    out = []
    for fast in (True, False):
        metrics = Metrics()
        decoder = Decoder(IngestSettings(), metrics, clock=lambda: NOW_S, fast_path=fast)
        result = decoder.decode(RawMessage(topic(kind), payload, NOW_S, 7))
        # repr tells 1 from 1.0 and -0.0 from 0.0, which == would not.
        dropped = [
            metrics.registry.get_sample_value("parkwatch_fields_dropped_total", {"reason": r})
            or 0.0
            for r in ("reserved_name", "invalid_field_name", "non_numeric_extra")
        ]
        out.append((repr(result), dropped))
    return out[0], out[1]


# -- payloads: valid, almost valid, hostile ------------------------------------------------------

FIELD_NAMES = sorted({name for model in MODELS.values() for name in model.model_fields})
ODD_KEYS = [
    "kind", "tag_fields", "model_config", "model_fields", "time", "park", "device", "connector",
    "_x", "__y", "", "a b", "a,b=c", "a\\b", "x\x00", "\n", "上海", "TS", "Ts",
]  # fmt: skip
ENUM_TEXT = [m.value for m in ChargerStatus] + [m.value for m in OcppErrorCode]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 3),
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 1000]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6),
    st.sampled_from([0.0, -0.0, 1e-7, 1e16, 1e300, 2.0**63, -(2.0**63), 9.3e18]),
    st.text(max_size=6),
    st.sampled_from([*ENUM_TEXT, "charging", "Charging ", "", "NoError\x00"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
RFC3339 = st.datetimes(
    min_value=datetime(2023, 11, 1), max_value=datetime(2023, 11, 30), timezones=st.just(UTC)
).map(lambda dt: dt.isoformat())
TS = st.one_of(
    st.integers(NOW_MS - 10**6, NOW_MS + 10**6),
    st.integers(NOW_MS - 10**6, NOW_MS + 10**6).map(str),
    RFC3339,
    st.sampled_from(["2023-11-14T22:13:20+08:00", "2023-11-14 22:13:20.5Z", "2023-11-14T22:13Z"]),
    st.sampled_from([0, -1, 10**14 - 1, 10**14, 2**63, 2**64, True, None, float(NOW_MS), "x"]),
    ANY_VALUE,
)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(ODD_KEYS), st.text(max_size=6))


def _valid_value(model: type[BaseModel], name: str) -> st.SearchStrategy[Any]:
    """Values the model accepts for ``name`` (and null where it may be absent)."""
    annotation = str(model.model_fields[name].annotation)
    if "ChargerStatus" in annotation:
        return st.sampled_from([m.value for m in ChargerStatus])
    if "OcppErrorCode" in annotation:
        return st.sampled_from([m.value for m in OcppErrorCode])
    if name == "connector_id":
        return st.integers(0, 999)
    if "bool" in annotation:
        return st.booleans() | st.none()
    if "int" in annotation:
        return st.integers(0, 2**63 - 1) | st.none()
    return st.floats(-1e7, 1e7) | st.integers(-1000, 1000) | st.none()


@st.composite
def plausible(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A payload of ``kind``: valid fields, sometimes one field off, sometimes extras."""
    model = MODELS[kind]
    names = [name for name in model.model_fields if name != "ts"]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    payload: dict[str, Any] = {"ts": draw(st.integers(NOW_MS - 10**6, NOW_MS + 10**6))}
    payload.update({name: draw(_valid_value(model, name)) for name in chosen})
    if draw(st.booleans()):  # almost valid: one field (ts included) gets any value
        payload[draw(st.sampled_from(["ts", *names]))] = draw(ANY_VALUE)
    if draw(st.booleans()):
        payload.update(draw(st.dictionaries(KEYS, ANY_VALUE, max_size=3)))
    return payload


@st.composite
def hostile(draw: st.DrawFn) -> dict[str, Any]:
    """Anything an object can hold, keys that mean something elsewhere included."""
    payload = draw(st.dictionaries(KEYS, ANY_VALUE, max_size=6))
    if draw(st.booleans()):
        payload["ts"] = draw(TS)
    return payload


def to_json(payload: object) -> bytes:
    """JSON text; integers of any size (orjson refuses those beyond 64 bits)."""
    return json.dumps(payload, ensure_ascii=False).encode()


RAW = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(
        [
            b"[]",
            b"null",
            b"1",
            b'"x"',
            b"{",
            b'{"ts": 1}x',
            b"\xef\xbb\xbf{}",
            b'{"ts": %d, "pv_kw": NaN}' % NOW_MS,
            b'{"ts": %d, "pv_kw": 1e999}' % NOW_MS,
            b'{"ts": %d, "x": -Infinity, "pv_kw": 1.0}' % NOW_MS,
            b'{"ts": %d, "pv_kw": 1.0, "pv_kw": "x"}' % NOW_MS,
            b'{"ts": %d, "pv_kw": "x", "pv_kw": 1.0}' % NOW_MS,
            b'{"ts": "x", "ts": %d, "pv_kw": 1.0}' % NOW_MS,
            b'{"ts": %d, "a": 1.0, "b": 2, "a": 3.5}' % NOW_MS,
            b'{"ts": %d, "pv_kw": 123456789012345678901234567890}' % NOW_MS,
            b'{"ts": %d, "x": 123456789012345678901234567890}' % NOW_MS,
            b'{"ts": %d, "s": "\\ud800"}' % NOW_MS,
            b' \n{"ts": %d, "pv_kw": 1E2} \t' % NOW_MS,
        ]
    ),
)


@settings(max_examples=800, deadline=None)
@given(
    kind=st.sampled_from(sorted(MODELS)),
    data=st.data(),
)
def test_the_fast_path_gives_what_pydantic_gives_for_any_payload(
    kind: str, data: st.DataObject
) -> None:
    shape = data.draw(st.sampled_from(["plausible", "hostile", "raw"]))
    if shape == "raw":
        payload = data.draw(RAW)
    else:
        payload = to_json(data.draw(plausible(kind) if shape == "plausible" else hostile()))
    fast, reference = both(kind, payload)
    event(f"{shape}: {'fast path' if READERS[kind].read(payload) else 'pydantic'}")
    assert fast == reference


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("microgrid", {"ts": NOW_MS, "pv_kw": 5}),  # an int in a float field becomes a float
        ("microgrid", {"ts": NOW_MS, "pv_kw": -0.0, "extra": 3, "park": 1.0, "_x": 1.0}),
        ("microgrid", {"frequency_hz": 50.0, "ts": NOW_MS, "pv_kw": 1.5}),  # model order
        ("charger", {"ts": NOW_MS, "status": "Charging", "error_code": "NoError"}),  # connector 1
        ("charger", {"ts": NOW_MS, "connector_id": 2, "power_kw": 7.4, "note": "x"}),
        ("site5g", {"ts": NOW_MS, "active_ues": 3, "on_battery": False, "sleep_level": None}),
        ("storage", {"ts": "2023-11-14T22:13:20.123Z", "soc_pct": 50.0}),
    ],
)
def test_examples_take_the_fast_path_and_match_pydantic(kind: str, payload: dict[str, Any]) -> None:
    body = orjson.dumps(payload)
    assert READERS[kind].read(body) is not None
    fast, reference = both(kind, body)
    assert fast == reference
    assert "Point(" in fast[0]


def test_every_kind_has_a_fast_path() -> None:
    # If this fails, a schema change gave a model a field shape collector/fastpath.py does not
    # know: that kind is validated by pydantic alone (correct, slower) until the table learns it.
    assert sorted(READERS) == sorted(MODELS)


def test_the_benchmark_and_simulator_payloads_all_take_the_fast_path() -> None:
    from simulators.fleet import default_fleet
    from simulators.generate import iter_messages
    from simulators.simtime import SHANGHAI

    messages = telemetry("parks", 400, devices=40, parks=balanced_parks(4))
    start = datetime(2025, 6, 21, 6, tzinfo=SHANGHAI)
    messages += list(iter_messages(default_fleet(), 1, start, 600))
    telemetry_messages = [(t, p) for t, p in messages if t.endswith("/telemetry")]
    assert len(telemetry_messages) > 400
    for name, payload in telemetry_messages:
        parts = parse_topic(name)
        assert not isinstance(parts, str)
        assert READERS[parts.kind].read(payload) is not None, (name, payload)


# -- models the table does not understand stay with pydantic --------------------------------------


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)

    ts: EpochMillis


class _Bounded(_Base):
    soc_pct: float | None = Field(default=None, ge=0, le=100)


class _Validated(_Base):
    pv_kw: float | None = None

    @field_validator("pv_kw")
    @classmethod
    def _round(cls, value: float | None) -> float | None:
        return None if value is None else round(value)


class _Listed(_Base):
    values: list[float] | None = None


class _Lenient(_Base):
    model_config = ConfigDict(extra="allow", strict=False, allow_inf_nan=False, frozen=True)
    pv_kw: float | None = None


class _NonStrictFloat(_Base):
    pv_kw: Annotated[float, Field(strict=False)] | None = None


class _Understood(_Base):
    pv_kw: float | None = None
    count: int | None = Field(default=None, ge=0, lt=10)


@pytest.mark.parametrize(
    "model", [_Bounded, _Validated, _Listed, _Lenient, _NonStrictFloat], ids=lambda m: m.__name__
)
def test_a_model_with_a_field_shape_the_table_does_not_know_has_no_fast_path(
    model: type[BaseModel],
) -> None:
    assert fast_readers({"x": model}) == {}


def test_integer_bounds_come_from_the_model() -> None:
    reader = fast_readers({"x": _Understood})["x"]
    assert reader.read(b'{"ts": 5, "count": 9}') == (5, {"count": 9}, [], None)
    assert reader.read(b'{"ts": 5, "count": 10}') is None
    assert reader.read(b'{"ts": 5, "count": -1}') is None
    assert reader.read(b'{"ts": 5, "pv_kw": true}') is None
    at = int(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).timestamp() * 1000)
    assert reader.read(b'{"ts": "2023-11-14T22:13:20Z", "pv_kw": 1}') == (
        at,
        {"pv_kw": 1.0},
        [],
        None,
    )


def test_a_dead_letter_from_the_fallback_keeps_pydantic_s_message() -> None:
    fast, reference = both("microgrid", orjson.dumps({"ts": NOW_MS, "pv_kw": "12"}))
    assert fast == reference
    assert "DeadLetter(" in fast[0]
    assert "pv_kw: Input should be a valid number" in fast[0]
