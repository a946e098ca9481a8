"""What the native MQTT client sends: CONNECT, SUBSCRIBE, UNSUBSCRIBE, acks, DISCONNECT, checked
against the fake broker's independent decoder; and the reason code names."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.adapters.mqttwire import (
    MQTT_5,
    MQTT_311,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    encode_ack,
    encode_connect,
    encode_disconnect,
    encode_subscribe,
    encode_unsubscribe,
    reason_name,
)
from tests.collector.adapters.mqttfake import (
    decode_connect,
    decode_subscribe,
    decode_unsubscribe,
    frame,
)

VERSIONS = [MQTT_5, MQTT_311]
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
topics = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00+#"),
    min_size=1,
    max_size=60,
)
packet_ids = st.integers(1, 0xFFFF)


@pytest.mark.parametrize("version", VERSIONS)
@given(data=st.data())
def test_connect_round_trips(version: int, data: st.DataObject) -> None:
    client_id, keepalive = data.draw(texts), data.draw(st.integers(0, 0xFFFF))
    clean, expiry = data.draw(st.booleans()), data.draw(st.integers(1, 2**32 - 1))
    receive_maximum = data.draw(st.integers(1, 0xFFFF))
    username, password = data.draw(st.none() | texts), data.draw(st.none() | texts)
    packet = encode_connect(
        client_id,
        version=version,
        keepalive=keepalive,
        clean_start=clean,
        session_expiry=expiry,
        receive_maximum=receive_maximum,
        username=username,
        password=password,
    )
    ((kind, flags, body),), rest = frame(packet)
    assert (kind, flags, rest) == (1, 0, b"")
    connect = decode_connect(body)
    assert (connect.version, connect.client_id) == (version, client_id)
    assert connect.keepalive == keepalive
    assert (connect.clean_start, connect.username, connect.password) == (clean, username, password)
    expected: dict[int, Any] = {0x11: expiry, 0x21: receive_maximum} if version == MQTT_5 else {}
    # No topic alias maximum (0x22) and no maximum packet size (0x27): see encode_connect.
    assert connect.properties == expected


@pytest.mark.parametrize("version", VERSIONS)
@given(packet_id=packet_ids, filters=st.lists(topics, min_size=1, max_size=5))
def test_subscribe_and_unsubscribe_round_trip(
    version: int, packet_id: int, filters: list[str]
) -> None:
    ((kind, flags, body),), _ = frame(encode_subscribe(packet_id, filters, version=version))
    assert (kind, flags) == (8, 2)
    assert decode_subscribe(body, version) == (packet_id, [(f, 1) for f in filters])
    ((kind, flags, body),), _ = frame(encode_unsubscribe(packet_id, filters, version=version))
    assert (kind, flags) == (10, 2)
    assert decode_unsubscribe(body, version) == (packet_id, filters)


@given(packet_id=packet_ids)
def test_acks_are_four_bytes(packet_id: int) -> None:
    pid = packet_id.to_bytes(2, "big")
    assert encode_ack(PUBACK, packet_id) == b"\x40\x02" + pid
    assert encode_ack(PUBREC, packet_id) == b"\x50\x02" + pid
    assert encode_ack(PUBREL, packet_id) == b"\x62\x02" + pid
    assert encode_ack(PUBCOMP, packet_id) == b"\x70\x02" + pid


def test_disconnect_and_reason_names() -> None:
    assert encode_disconnect(version=MQTT_5) == b"\xe0\x00"
    assert encode_disconnect(0x94, version=MQTT_5) == b"\xe0\x01\x94"
    assert encode_disconnect(0x94, version=MQTT_311) == b"\xe0\x00"
    assert reason_name(0x87) == "Not authorized"
    assert reason_name(0x8E) == "Session taken over"
    assert reason_name(0x42) == "reason code 0x42"
