"""Line-protocol encoding with ``LineEncoder`` (the encoder the decoder runs): escaping rules, field
value types, its caches, and a round trip through the real InfluxDB 1.x for arbitrary tag values
and field values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import lineproto
from collector.lineproto import LineEncoder, escape_measurement, escape_tag, field_value
from parkwatch.localservers import InfluxDB1


def encode(
    measurement: str,
    tags: tuple[tuple[str, str], ...],
    fields: dict[str, lineproto.FieldValue],
    timestamp: int,
) -> str:
    """One line from a fresh encoder (its caches empty)."""
    return LineEncoder().encode(measurement, tags, fields, timestamp)


# -- escaping ------------------------------------------------------------------------------------


def test_measurement_escapes_comma_and_space_but_not_equals() -> None:
    assert escape_measurement("grid meter,a=b") == r"grid\ meter\,a=b"


def test_tag_escaping_covers_comma_equals_and_space() -> None:
    assert escape_tag("a b,c=d") == r"a\ b\,c\=d"


def test_tag_escaping_leaves_quotes_and_non_ascii_alone() -> None:
    assert escape_tag('say "上海" 😀') == r'say\ "上海"\ 😀'


def test_tag_keys_tag_values_and_field_keys_are_escaped_in_a_line() -> None:
    line = encode("power meter", (("park id", "Cao,he=jing"),), {"pv kw,=": 1.5}, 1_700_000_000_000)
    assert line == r"power\ meter,park\ id=Cao\,he\=jing pv\ kw\,\==1.5 1700000000000"


def test_string_field_escapes_double_quote_and_backslash() -> None:
    assert field_value('say "hi" \\ ok\\') == r'"say \"hi\" \\ ok\\"'


def test_string_field_keeps_comma_equals_space_and_non_ascii_unescaped() -> None:
    assert field_value("a, b=c 中文") == '"a, b=c 中文"'


# -- field value types ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "encoded"), [(True, "true"), (False, "false")])
def test_bools_encode_as_line_protocol_booleans_not_integers(value: bool, encoded: str) -> None:
    assert field_value(value) == encoded


@pytest.mark.parametrize(("value", "encoded"), [(0, "0i"), (1, "1i"), (-42, "-42i")])
def test_ints_get_the_integer_suffix(value: int, encoded: str) -> None:
    assert field_value(value) == encoded


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(1.0, "1.0"), (0.1, "0.1"), (-2.5, "-2.5"), (1e-7, "1e-07"), (1e300, "1e+300")],
)
def test_floats_encode_as_their_shortest_repr(value: float, encoded: str) -> None:
    assert field_value(value) == encoded


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_float_encodes_to_text_that_parses_back_to_the_same_float(
    value: float,
) -> None:
    text = field_value(value)
    assert not text.endswith("i")
    assert float(text) == value
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        field_value(value)


def test_empty_tag_values_are_skipped() -> None:
    line = encode("m", (("a", ""), ("b", "x"), ("c", "")), {"f": 1}, 5)
    assert line == "m,b=x f=1i 5"


def test_tags_keep_the_order_they_are_given_in() -> None:
    assert encode("m", (("b", "1"), ("a", "2")), {"f": 1.0}, 1) == "m,b=1,a=2 f=1.0 1"


def test_a_point_without_fields_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        encode("m", (("a", "b"),), {}, 1)


def test_all_field_kinds_in_one_line_keep_their_order() -> None:
    line = encode("m", (), {"f": 2.5, "i": 3, "b": False, "s": "x"}, 9)
    assert line == 'm f=2.5,i=3i,b=false,s="x" 9'


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_encoder_refuses_nan_and_infinity_in_a_field(value: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        encode("m", (), {"ok": 1.0, "f": value}, 1)


# -- the caches ----------------------------------------------------------------------------------


def test_a_cached_series_and_field_key_give_the_same_line_as_a_fresh_encoder() -> None:
    encoder = LineEncoder()
    tags = (("device", "meter 1"), ("park", "cao,he"))
    first = encoder.encode("microgrid", tags, {"pv kw": 1.5, "n": 1}, 1)
    again = encoder.encode("microgrid", tags, {"pv kw": 2.5, "n": 2}, 2)
    assert first == r"microgrid,device=meter\ 1,park=cao\,he pv\ kw=1.5,n=1i 1"
    assert again == r"microgrid,device=meter\ 1,park=cao\,he pv\ kw=2.5,n=2i 2"


def test_caches_that_reach_their_limit_start_over_and_still_encode_correctly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lineproto, "CACHE_LIMIT", 2)
    encoder = LineEncoder()
    for n in range(7):  # seven series and field keys: the caches are cleared three times
        tags = (("device", f"d {n}"),)
        assert encoder.encode("m", tags, {f"f{n}": 1.0}, n) == rf"m,device=d\ {n} f{n}=1.0 {n}"
    assert encoder.encode("m", (("device", "d 0"),), {"f0": 2.0}, 9) == r"m,device=d\ 0 f0=2.0 9"


# -- round trip through the real InfluxDB 1.x -----------------------------------------------------

# What ``parkwatch.schema.parse_topic`` lets through as an id: printable, no backslash. The
# sampled characters are the ones line protocol treats specially, so they come up often.
_SPECIAL = [*" ,=\"'#{}[]:;", "é", "中", "ß", "😀", "🔋", "\u00a0"]
_PRINTABLE = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"),
    exclude_characters="\\",
).filter(str.isprintable)
TAG_VALUES = st.text(alphabet=st.one_of(st.sampled_from(_SPECIAL), _PRINTABLE), max_size=24)
STRING_FIELDS = st.text(
    alphabet=st.one_of(st.sampled_from([*_SPECIAL, "\\"]), _PRINTABLE), max_size=24
)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)

ODD_TAG_KEY = "tag key,="
ODD_FIELD_KEY = "field key,="
BASE_MS = 1_700_000_000_000

_measurements = itertools.count()
# One encoder for every example, as in the decoder: later examples meet warm caches.
_ENCODER = LineEncoder()


def _quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def roundtrip_database(influxdb: InfluxDB1) -> Iterator[str]:
    """One database for the whole property test (hypothesis re-runs the body, not fixtures)."""
    name = "t_lineproto_roundtrip"
    influxdb.drop_database(name)
    influxdb.create_database(name)
    yield name
    influxdb.drop_database(name)


@pytest.mark.servers
@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(
        st.tuples(TAG_VALUES, TAG_VALUES, STRING_FIELDS, FINITE, INT64, st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_tag_and_field_values_round_trip_exactly_through_influxdb(
    influxdb: InfluxDB1,
    roundtrip_database: str,
    rows: list[tuple[str, str, str, float, int, bool]],
) -> None:
    # A measurement of its own per example, with characters that need escaping in it as well.
    measurement = f"round trip,{next(_measurements)}="
    lines = [
        _ENCODER.encode(
            measurement,
            (("t", tag), (ODD_TAG_KEY, odd_tag)),  # sorted by key, as the decoder passes them
            {"n": index, "s": text, ODD_FIELD_KEY: number, "i": integer, "b": flag},
            BASE_MS + index,
        )
        for index, (tag, odd_tag, text, number, integer, flag) in enumerate(rows)
    ]
    influxdb.write(roundtrip_database, "\n".join(lines))

    select = f"SELECT * FROM {_quote_ident(measurement)}"  # noqa: S608 - a quoted identifier
    stored = influxdb.query(roundtrip_database, select)
    assert sorted(row["n"] for row in stored) == list(range(len(rows)))
    for row in stored:
        tag, odd_tag, text, number, integer, flag = rows[row["n"]]
        assert row["time"] == BASE_MS + row["n"]
        # An empty tag value is left out of the line, so the point simply has no such tag.
        assert row.get("t") == (tag or None)
        assert row.get(ODD_TAG_KEY) == (odd_tag or None)
        assert row["s"] == text
        # InfluxDB's JSON writes a float's shortest decimal form, which may look like an int.
        assert float(row[ODD_FIELD_KEY]) == number
        assert row["i"] == integer
        assert row["b"] is flag

    tag_values = influxdb.query(
        roundtrip_database,
        f'SHOW TAG VALUES FROM {_quote_ident(measurement)} WITH KEY = "t"',
    )
    assert {row["value"] for row in tag_values} == {tag for tag, *_ in rows if tag}
