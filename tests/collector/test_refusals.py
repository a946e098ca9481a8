"""The refusal memory: reading field types and series keys back out of encoded lines, and what is
remembered, for how long, and how much."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from collector.lineproto import LineEncoder, escape_measurement, escape_tag
from collector.messages import Reason
from collector.refusals import RefusalMemory, field_types, refusal_of, series_key
from parkwatch.errors import FieldTypeConflict, SinkRejected
from parkwatch.points import FieldValue

TS = 1_700_000_000_000
INFLUX_TYPE = {bool: "boolean", int: "integer", float: "float", str: "string"}

# Without backslashes: the encoder does not escape them (topic ids cannot hold one), so InfluxDB
# refuses such a line and the writer dead-letters it; there is no type to read back.
names = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\\"),
    min_size=1,
    max_size=12,
)
values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=12),
)


@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=3),
    fields=st.dictionaries(names, values, min_size=1, max_size=6),
)
def test_field_types_and_series_key_read_back_what_the_production_encoder_wrote(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue]
) -> None:
    line = LineEncoder().encode(measurement, tuple(sorted(tags.items())), fields, TS)
    assert field_types(line) == {name: INFLUX_TYPE[type(value)] for name, value in fields.items()}
    expected_key = escape_measurement(measurement) + "".join(
        f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v
    )
    assert series_key(line) == expected_key


def test_unsigned_and_every_boolean_spelling_are_typed_as_influxdb_types_them() -> None:
    line = 'm a=1u,b=t,c=FALSE,d=True,e=1.5,f=-3i,g="x, y=1" 1'
    assert field_types(line) == {
        "a": "unsigned",
        "b": "boolean",
        "c": "boolean",
        "d": "boolean",
        "e": "float",
        "f": "integer",
        "g": "string",
    }


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_learnt_field_type_refuses_lines_that_give_the_field_another_type_only() -> None:
    memory = RefusalMemory()
    assert memory.learn_conflict(FieldTypeConflict("microgrid", "mode", "float")) is True
    assert memory.learn_conflict(FieldTypeConflict("microgrid", "mode", "float")) is False
    refused = memory.screen(f"microgrid,device=a,park=p mode=true,pv_kw=1.0 {TS}")
    assert refused is not None
    assert refused.reason == Reason.REJECTED_BY_SINK
    assert 'field "mode" on measurement "microgrid" is boolean' in refused.detail
    assert "holds float" in refused.detail
    assert memory.screen(f"microgrid,device=a,park=p mode=2.5 {TS}") is None
    assert memory.screen(f"microgrid,device=a,park=p pv_kw=1.0 {TS}") is None
    assert memory.screen(f"storage,device=a,park=p mode=true {TS}") is None


def test_a_learnt_series_refuses_every_line_of_that_series_only() -> None:
    memory = RefusalMemory()
    memory.learn_refused_series(f"microgrid,device=new,park=p pv_kw=1.0 {TS}", "max-values-per-tag")
    refused = memory.screen(f"microgrid,device=new,park=p load_kw=2i {TS + 1}")
    assert refused is not None
    assert refused.reason == Reason.SERIES_LIMIT
    assert "max-values-per-tag" in refused.detail
    assert memory.screen(f"microgrid,device=old,park=p pv_kw=1.0 {TS}") is None


def test_what_is_learnt_is_forgotten_after_the_ttl() -> None:
    clock = Clock()
    memory = RefusalMemory(ttl_s=60, clock=clock)
    memory.learn_conflict(FieldTypeConflict("m", "x", "integer"))
    memory.learn_refused_series(f"m,device=d x=1i {TS}", "max-series-per-database")
    clock.now += 59
    assert memory.screen(f"m,device=d x=1i {TS}") is not None
    assert memory.screen(f"m,device=e x=1.5 {TS}") is not None
    clock.now += 2
    assert memory.screen(f"m,device=d x=1i {TS}") is None
    assert memory.screen(f"m,device=e x=1.5 {TS}") is None
    assert len(memory) == 0


def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    memory = RefusalMemory(max_entries=3)
    for n in range(5):
        memory.learn_conflict(FieldTypeConflict("m", f"f{n}", "integer"))
        memory.learn_refused_series(f"m,device=d{n} f=1i {TS}", "max-series-per-database")
    assert len(memory) == 6  # 3 of each kind
    assert memory.screen(f"m f0=1.5 {TS}") is None
    assert memory.screen(f"m f4=1.5 {TS}") is not None
    assert memory.screen(f"m,device=d1 g=1i {TS}") is None
    assert memory.screen(f"m,device=d2 g=1i {TS}") is not None


def test_a_limit_refusal_is_a_series_limit_and_any_other_is_rejected_by_sink() -> None:
    limit = SinkRejected("HTTP 400: max-values-per-tag ...", status=400, limit="max-values-per-tag")
    other = SinkRejected("HTTP 400: unable to parse", status=400)
    assert refusal_of(limit).reason == Reason.SERIES_LIMIT
    assert refusal_of(other).reason == Reason.REJECTED_BY_SINK
    assert refusal_of(other).detail == "HTTP 400: unable to parse"
