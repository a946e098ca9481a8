"""The MQTT parser: round trips, streams split anywhere, garbage, budgets, payload limits."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.adapters.mqttparser import (
    ConnAck,
    Disconnect,
    Packet,
    Parser,
    PingResp,
    Publish,
    PubRel,
    SubAck,
    UnsubAck,
)
from collector.adapters.mqttwire import (
    MQTT_5,
    MQTT_311,
    PUBREL,
    ProtocolError,
    encode_ack,
    encode_disconnect,
)
from tests.collector.adapters.mqttfake import (
    encode_connack,
    encode_publish,
    encode_suback,
    encode_unsuback,
)

VERSIONS = [MQTT_5, MQTT_311]
UNLIMITED = (1 << 30, 1 << 62)

texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
topics = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00+#"),
    min_size=1,
    max_size=60,
)
packet_ids = st.integers(1, 0xFFFF)
# PUBLISH properties a broker may forward (never a topic alias: we allowed none).
publish_properties = st.fixed_dictionaries(
    {},
    optional={
        0x01: st.integers(0, 1),
        0x02: st.integers(0, 2**32 - 1),
        0x03: texts,
        0x08: texts,
        0x09: st.binary(max_size=20),
        0x0B: st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3),
        0x26: st.lists(st.tuples(texts, texts), min_size=1, max_size=3),
    },
)


@st.composite
def publishes(draw: st.DrawFn, version: int) -> tuple[bytes, Publish]:
    """A PUBLISH as a broker sends it, and what the parser must make of it."""
    topic = draw(topics)
    payload = draw(st.binary(max_size=300))
    qos = draw(st.integers(0, 2))
    packet_id = draw(packet_ids) if qos else 0
    retain = draw(st.booleans())
    properties = draw(publish_properties) if version == MQTT_5 else None
    data = encode_publish(
        topic,
        payload,
        version=version,
        qos=qos,
        packet_id=packet_id,
        retain=retain,
        dup=draw(st.booleans()),
        properties=properties,
    )
    return data, (topic.encode(), payload, packet_id, qos, int(retain), len(payload))


@st.composite
def connacks(draw: st.DrawFn, version: int) -> tuple[bytes, Packet]:
    """CONNACK: MQTT 5 with reason codes and properties, 3.1.1 with return codes."""
    if version == MQTT_311:
        rc = draw(st.integers(0, 5))
        mapped = {0: 0, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}[rc]
        return encode_connack(rc, version=version), ConnAck(mapped, False)
    code = draw(st.sampled_from([0, 0x80, 0x86, 0x87, 0x88]))
    props = draw(
        st.fixed_dictionaries(
            {},
            optional={
                0x13: st.integers(0, 0xFFFF),  # server keep alive
                0x21: st.integers(1, 0xFFFF),  # receive maximum
                0x12: texts,  # assigned client identifier
                0x1F: texts,  # reason string
                0x24: st.integers(0, 1),  # maximum QoS
                0x27: st.integers(1, 2**32 - 1),  # maximum packet size
            },
        )
    )
    present = draw(st.booleans()) and code == 0
    data = encode_connack(code, version=version, session_present=present, properties=props)
    return data, ConnAck(code, present, props)


@st.composite
def subacks(draw: st.DrawFn, version: int) -> tuple[bytes, Packet]:
    """SUBACK with granted QoS and failure codes."""
    packet_id = draw(packet_ids)
    codes = draw(st.lists(st.sampled_from([0, 1, 2, 0x80, 0x87, 0x8F]), min_size=1))
    return encode_suback(packet_id, codes, version=version), SubAck(packet_id, codes)


@st.composite
def unsubacks(draw: st.DrawFn, version: int) -> tuple[bytes, Packet]:
    """UNSUBACK (reason codes in MQTT 5 only)."""
    packet_id = draw(packet_ids)
    codes = draw(st.lists(st.sampled_from([0, 0x11, 0x80]), min_size=1)) if version == 5 else []
    return encode_unsuback(packet_id, codes, version=version), UnsubAck(packet_id, codes)


@st.composite
def others(draw: st.DrawFn, version: int) -> tuple[bytes, Packet]:
    """PUBREL, PINGRESP or DISCONNECT (with a reason code in MQTT 5)."""
    kind = draw(st.sampled_from(["pubrel", "pingresp", "disconnect"]))
    if kind == "pubrel":
        packet_id = draw(packet_ids)
        return encode_ack(PUBREL, packet_id), PubRel(packet_id)
    if kind == "pingresp":
        return b"\xd0\x00", PingResp()
    code = draw(st.sampled_from([0, 0x8E, 0x8B, 0x98])) if version == MQTT_5 else 0
    return encode_disconnect(code, version=version), Disconnect(code)


def control_packets(version: int) -> st.SearchStrategy[tuple[bytes, Packet]]:
    """A packet other than PUBLISH as a broker sends it, and its decoded form."""
    return st.one_of(connacks(version), subacks(version), unsubacks(version), others(version))


def parse_all(parser: Parser, budget: tuple[int, int] = UNLIMITED) -> list[Publish | Packet]:
    """Everything the parser can give now, in stream order."""
    out: list[Publish | Packet] = []
    while True:
        publishes, packet = parser.parse(*budget)
        out += publishes
        if packet is not None:
            out.append(packet)
        elif not publishes:
            return out


def streams(version: int) -> st.SearchStrategy[tuple[bytes, list[Publish | Packet]]]:
    """Byte streams of many packets, and what they decode to."""
    one = st.one_of(publishes(version), publishes(version), control_packets(version))
    return st.lists(one, max_size=30).map(
        lambda pairs: (b"".join(data for data, _ in pairs), [item for _, item in pairs])
    )


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
def test_packets_round_trip(version: int, data: st.DataObject) -> None:
    stream, expected = data.draw(streams(version))
    parser = Parser(version)
    parser.feed(stream)
    assert parse_all(parser) == expected
    assert parser.buffered == 0


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_a_stream_split_anywhere_parses_as_a_whole(version: int, data: st.DataObject) -> None:
    stream, expected = data.draw(streams(version))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    budget = data.draw(st.sampled_from([UNLIMITED, (1, 1 << 62), (3, 200), (1 << 30, 0)]))
    parser = Parser(version)
    got: list[Publish | Packet] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        parser.feed(stream[start:stop])
        got += parse_all(parser, budget)
    assert got == expected
    assert parser.buffered == 0


@pytest.mark.parametrize("version", VERSIONS)
@given(garbage=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_garbage_raises_only_protocol_error_and_never_hangs(
    version: int, garbage: bytes, cuts: list[int]
) -> None:
    parser = Parser(version, payload_limit=50, keep=10)
    points = sorted({min(cut, len(garbage)) for cut in cuts})
    reason: int | None = None
    try:
        for start, stop in zip([0, *points], [*points, len(garbage)], strict=True):
            parser.feed(garbage[start:stop])
            # Each parse consumes a packet or returns nothing: bounded by the bytes fed.
            for _ in range(len(garbage) + 2):
                publishes, packet = parser.parse(*UNLIMITED)
                if not publishes and packet is None:
                    break
            else:
                pytest.fail("the parser kept returning packets from a finite input")
    except ProtocolError as exc:
        reason = exc.reason_code
    assert reason in (None, 0x81, 0x82, 0x94)


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
def test_garbage_after_valid_packets_keeps_them(version: int, data: st.DataObject) -> None:
    stream, expected = data.draw(streams(version))
    parser = Parser(version)
    parser.feed(stream + data.draw(st.binary(max_size=100)))
    got: list[Publish | Packet] = []
    try:
        while True:
            publishes, packet = parser.parse(*UNLIMITED)
            got += publishes
            if packet is None and not publishes:
                break
            if packet is not None:
                got.append(packet)
    except ProtocolError:
        pass
    assert got[: len(expected)] == expected


def test_a_topic_alias_is_a_protocol_error() -> None:
    parser = Parser(MQTT_5)
    parser.feed(encode_publish("a/b", b"x", version=MQTT_5, properties={0x23: 3}))
    with pytest.raises(ProtocolError, match="topic alias") as caught:
        parser.parse(*UNLIMITED)
    assert caught.value.reason_code == 0x94
    parser = Parser(MQTT_5)
    parser.feed(encode_publish(b"", b"x", version=MQTT_5))  # alias-only form: no topic name
    with pytest.raises(ProtocolError, match="without a topic"):
        parser.parse(*UNLIMITED)


@pytest.mark.parametrize(
    "stream",
    [
        b"\x30\xff\xff\xff\xff\x7f",  # remaining length of five bytes
        b"\x36\x05\x00\x01a\x00\x00",  # QoS 3
        b"\x32\x05\x00\x01a\x00\x00",  # QoS 1 with packet id 0
        b"\x30\x01\x00",  # PUBLISH shorter than its topic length
        b"\x10\x00",  # CONNECT: a broker never sends it
        b"\x40\x02\x00\x01",  # PUBACK: we never publish
        b"\x21\x02\x00\x00",  # CONNACK with flags
        b"\x20\x04\x00\x00\x05\x00",  # properties longer than the packet
        b"\x20\x05\x00\x00\x02\x7f\x00",  # unknown property
        b"\x20\x07\x00\x00\x04\x13\x00\x01\x13",  # a property given twice (cut short)
    ],
)
def test_malformed_packets_are_protocol_errors(stream: bytes) -> None:
    parser = Parser(MQTT_5)
    parser.feed(stream)
    with pytest.raises(ProtocolError):
        parse_all(parser)


def test_the_budget_holds_publishes_back_but_not_other_packets() -> None:
    messages = [encode_publish("t", b"%d" % n * 10, version=MQTT_5) for n in range(5)]
    parser = Parser(MQTT_5)
    parser.feed(messages[0] + b"\xd0\x00" + b"".join(messages[1:]))
    assert parser.parse(0, 1 << 30) == ([], None)  # no budget: the first PUBLISH waits
    first, packet = parser.parse(1, 1 << 30)
    assert [p[1] for p in first] == [b"0" * 10]
    assert packet == PingResp()  # after the PUBLISH, and returned with it
    assert parser.parse(0, -1) == ([], None)
    # Bytes: stop after the message that takes the count past the budget.
    two, _ = parser.parse(10, 12)
    assert [p[1] for p in two] == [b"1" * 10, b"2" * 10]
    rest, _ = parser.parse(10, 1 << 30)
    assert [p[1] for p in rest] == [b"3" * 10, b"4" * 10]
    assert parser.buffered == 0


def test_payloads_over_the_limit_are_cut_unless_retained() -> None:
    parser = Parser(MQTT_5, payload_limit=100, keep=10)
    parser.feed(
        encode_publish("t", b"a" * 100, version=MQTT_5)
        + encode_publish("t", b"b" * 101, version=MQTT_5, qos=1, packet_id=9)
        + encode_publish("t", b"c" * 101, version=MQTT_5, retain=True)
    )
    publishes, _ = parser.parse(*UNLIMITED)
    assert publishes == [
        (b"t", b"a" * 100, 0, 0, 0, 100),
        (b"t", b"b" * 10, 9, 1, 0, 101),
        (b"t", b"c" * 101, 0, 0, 1, 101),  # retained: its digest needs all of it
    ]


def test_a_large_packet_in_many_reads_comes_out_whole() -> None:
    payload = bytes(range(256)) * 4000  # ~1 MB
    data = encode_publish("big", payload, version=MQTT_5, qos=1, packet_id=1)
    chunks = [data[at : at + 65536] for at in range(0, len(data), 65536)]
    parser = Parser(MQTT_5)
    for chunk in chunks[:-1]:
        parser.feed(chunk)
        assert parser.parse(*UNLIMITED) == ([], None)
    parser.feed(chunks[-1])
    assert parser.parse(*UNLIMITED) == ([(b"big", payload, 1, 1, 0, len(payload))], None)
    assert parser.buffered == 0


def test_a_disconnect_carries_its_reason_string() -> None:
    parser = Parser(MQTT_5)
    body = b"\x8e" + b"\x0a\x1f\x00\x07elsehow"
    parser.feed(b"\xe0" + bytes([len(body)]) + body)
    assert parser.parse(*UNLIMITED) == ([], Disconnect(0x8E, {0x1F: "elsehow"}))
    disconnect = Disconnect(0x8E, {0x1F: "elsehow"})
    assert disconnect.reason_string == "elsehow"
    connack = ConnAck(0, False, {0x13: 7, 0x21: 10})
    assert (connack.server_keep_alive, connack.receive_maximum) == (7, 10)
