"""The MQTT 5 / 3.1.1 wire format for a subscriber: its vocabulary (packet types, properties,
reason codes) and the packets it sends. ``collector/adapters/mqttparser.py`` reads what a broker
sends. Pure functions over bytes: no I/O, no clock.

Why parkwatch has its own MQTT client (the project prefers libraries; this is the measured
exception). A py-spy profile of ``bench.drain`` with paho-mqtt 2.2 put ~57 % of the collector's
CPU in the MQTT reading path, ~20 % in paho building an MQTT 5 ``Properties`` object for every
incoming PUBLISH (``Properties.clear``/``__init__``/``__setattr__``), the rest in its
``_packet_read``/``_packet_handle``/``decode_publish``, one packet and one callback at a time.
gmqtt is fast but cannot defer a PUBACK without a task per message, and aiomqtt acks on receipt:
both break ack-after-safe. A subscriber needs only a few packets, and the hot one, PUBLISH, is a
few slices of a ``bytes`` object. Measured (``bench.ingest``, QoS 1 with the PUBACK after the
pipeline's settle, CPU per message on a busy 2-core machine): this client 8.2 us, paho with a
read buffer 50 us, stock paho 83 us, bare gmqtt acking on receipt 11 us, aiomqtt 164 us. In
``bench.drain`` the whole collector drains 1.68x faster than with paho (median of 3 rounds), and
the MQTT path fell to ~10 % of its CPU. The README's Benchmarks section has the figures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from parkwatch.errors import SourceError

__all__ = [
    "MQTT_5",
    "MQTT_311",
    "PINGREQ",
    "Properties",
    "ProtocolError",
    "decode_properties",
    "encode_ack",
    "encode_connect",
    "encode_disconnect",
    "encode_properties",
    "encode_subscribe",
    "encode_unsubscribe",
    "read_varint",
    "reason_name",
    "skip_properties",
]

MQTT_311: Final = 4  # protocol level in CONNECT
MQTT_5: Final = 5

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ_TYPE, PINGRESP, DISCONNECT = range(8, 15)

PINGREQ: Final = b"\xc0\x00"
MAX_REMAINING: Final = 268_435_455  # the largest remaining length four varint bytes can say
MALFORMED: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
TOPIC_ALIAS_INVALID: Final = 0x94


class ProtocolError(SourceError):
    """The broker sent something that is not valid MQTT, or a feature we did not allow."""

    def __init__(self, message: str, reason_code: int = MALFORMED) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        """What to tell the broker in our DISCONNECT (MQTT 5)."""


# -- properties (MQTT 5, section 2.2.2.2) --------------------------------------------------------

_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: _BYTE,  # payload format indicator
    0x02: _FOUR,  # message expiry interval
    0x03: _UTF8,  # content type
    0x08: _UTF8,  # response topic
    0x09: _BINARY,  # correlation data
    0x0B: _VARINT,  # subscription identifier (may repeat)
    0x11: _FOUR,  # session expiry interval
    0x12: _UTF8,  # assigned client identifier
    0x13: _TWO,  # server keep alive
    0x15: _UTF8,  # authentication method
    0x16: _BINARY,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _FOUR,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _UTF8,  # response information
    0x1C: _UTF8,  # server reference
    0x1F: _UTF8,  # reason string
    0x21: _TWO,  # receive maximum
    0x22: _TWO,  # topic alias maximum
    0x23: _TWO,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property (may repeat)
    0x27: _FOUR,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifier available
    0x2A: _BYTE,  # shared subscription available
}
_REPEATABLE: Final = frozenset({0x0B, 0x26})
SESSION_EXPIRY, SERVER_KEEP_ALIVE, REASON_STRING, RECEIVE_MAXIMUM = 0x11, 0x13, 0x1F, 0x21
TOPIC_ALIAS: Final = 0x23

Properties = dict[int, Any]
"""Property id -> value; the repeatable ones (user property, subscription identifier) as lists."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"a string of {len(data)} bytes does not fit MQTT's 64 KiB")
    return struct.pack(">H", len(data)) + data


def encode_properties(properties: Properties) -> bytes:
    """Properties with their length prefix (used for every MQTT 5 packet we build)."""
    body = bytearray()
    for ident, value in properties.items():
        kind = _PROPERTY_TYPES[ident]
        for item in value if ident in _REPEATABLE else [value]:
            body += _varint(ident)
            if kind == _BYTE:
                body.append(item)
            elif kind == _TWO:
                body += struct.pack(">H", item)
            elif kind == _FOUR:
                body += struct.pack(">I", item)
            elif kind == _VARINT:
                body += _varint(item)
            elif kind == _UTF8:
                body += _string(item.encode())
            elif kind == _BINARY:
                body += _string(item)
            else:
                body += _string(item[0].encode()) + _string(item[1].encode())
    return _varint(len(body)) + bytes(body)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


# -- what a subscriber sends ---------------------------------------------------------------------


def encode_connect(
    client_id: str,
    *,
    version: int,
    keepalive: int,
    clean_start: bool = False,
    session_expiry: int | None = None,
    receive_maximum: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT. No Topic Alias Maximum (aliases stay off) and no Maximum Packet Size: a broker
    would silently drop larger messages for us, and we want them, to dead-letter them."""
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = _string(b"MQTT") + bytes((version, flags)) + struct.pack(">H", keepalive)
    if version == MQTT_5:
        properties: Properties = {}
        if session_expiry:
            properties[SESSION_EXPIRY] = session_expiry
        if receive_maximum is not None:
            properties[RECEIVE_MAXIMUM] = receive_maximum
        body += encode_properties(properties)
    body += _string(client_id.encode())
    if username is not None:
        body += _string(username.encode())
    if password is not None:
        body += _string(password.encode())
    return _packet(CONNECT << 4, body)


def encode_subscribe(packet_id: int, filters: list[str], *, version: int, qos: int = 1) -> bytes:
    """SUBSCRIBE to several topic filters at one QoS."""
    body = struct.pack(">H", packet_id) + (b"\x00" if version == MQTT_5 else b"")
    for topic_filter in filters:
        body += _string(topic_filter.encode()) + bytes((qos,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_unsubscribe(packet_id: int, filters: list[str], *, version: int) -> bytes:
    """UNSUBSCRIBE from topic filters."""
    body = struct.pack(">H", packet_id) + (b"\x00" if version == MQTT_5 else b"")
    for topic_filter in filters:
        body += _string(topic_filter.encode())
    return _packet(UNSUBSCRIBE << 4 | 0x02, body)


_ACK: Final = struct.Struct(">BBH")
_ACK_FIRST: Final = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}


def encode_ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP with reason Success (4 bytes in both versions)."""
    return _ACK.pack(_ACK_FIRST[kind], 2, packet_id)


def encode_disconnect(reason_code: int = 0, *, version: int) -> bytes:
    """DISCONNECT (MQTT 5 with a reason code; Normal disconnection is the short form)."""
    if version == MQTT_5 and reason_code:
        return bytes((DISCONNECT << 4, 1, reason_code))
    return bytes((DISCONNECT << 4, 0))


# -- property blocks, decoded (used by the parser) ------------------------------------------------


def read_varint(buf: bytes, at: int, end: int) -> tuple[int, int]:
    """(value, index after it) of the varint at ``at``; index -1 if it is incomplete."""
    value, shift = 0, 0
    for index in range(at, min(at + 4, end)):
        byte = buf[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if end - at >= 4:
        raise ProtocolError("a variable byte integer longer than 4 bytes")
    return 0, -1


def skip_properties(buf: bytes, at: int, stop: int) -> int:
    """The index after the property block at ``at`` (checked to lie within ``stop``)."""
    length, start = read_varint(buf, at, stop)
    if start < 0 or start + length > stop:
        raise ProtocolError("properties longer than their packet")
    return start + length


def decode_properties(buf: bytes, at: int, stop: int, *, exact: bool) -> Properties:
    """Decode the property block at ``at``; with ``exact`` it must end at ``stop``."""
    length, index = read_varint(buf, at, stop)
    end = index + length
    if index < 0 or end > stop or (exact and end != stop):
        raise ProtocolError("properties do not fit their packet")
    out: Properties = {}
    try:
        while index < end:
            ident, index = read_varint(buf, index, end)
            kind = _PROPERTY_TYPES.get(ident)
            if kind is None or index < 0:
                raise ProtocolError(f"unknown property {ident:#x}")
            value, index = _READ[kind](buf, index, end)
            if index < 0 or index > end:
                raise ProtocolError(f"property {ident:#x} runs past its block")
            if ident in _REPEATABLE:
                out.setdefault(ident, []).append(value)
            elif ident in out:
                raise ProtocolError(f"property {ident:#x} given twice", PROTOCOL_ERROR)
            else:
                out[ident] = value
    except IndexError:
        raise ProtocolError("properties shorter than their fields") from None
    return out


def _read_pair(buf: bytes, at: int, end: int) -> tuple[tuple[str, str], int]:
    key, at = _read_string(buf, at, end)
    text, at = _read_string(buf, at, end)
    return (_text(key), _text(text)), at


def _read_utf8(buf: bytes, at: int, end: int) -> tuple[str, int]:
    raw, at = _read_string(buf, at, end)
    return _text(raw), at


def _read_string(buf: bytes, at: int, end: int) -> tuple[bytes, int]:
    if at + 2 > end:
        raise ProtocolError("a string runs past its block")
    stop = at + 2 + ((buf[at] << 8) | buf[at + 1])
    if stop > end:
        raise ProtocolError("a string runs past its block")
    return buf[at + 2 : stop], stop


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("a string that is not UTF-8") from None


_READ: Final[dict[int, Callable[[bytes, int, int], tuple[Any, int]]]] = {
    _BYTE: lambda buf, at, end: (buf[at], at + 1),
    _TWO: lambda buf, at, end: (int.from_bytes(buf[at : at + 2], "big"), at + 2),
    _FOUR: lambda buf, at, end: (int.from_bytes(buf[at : at + 4], "big"), at + 4),
    _VARINT: read_varint,
    _UTF8: _read_utf8,
    _BINARY: _read_string,
    _PAIR: _read_pair,
}

_REASON_NAMES: Final = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with will message",
    0x10: "No matching subscribers",
    0x11: "No subscription found",
    0x80: "Unspecified error",
    0x81: "Malformed packet",
    0x82: "Protocol error",
    0x83: "Implementation specific error",
    0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid",
    0x86: "Bad user name or password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic filter invalid",
    0x90: "Topic name invalid",
    0x91: "Packet identifier in use",
    0x92: "Packet identifier not found",
    0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared subscription not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported",
    0xA2: "Wildcard subscription not supported",
}


def reason_name(code: int) -> str:
    """A reason code as MQTT 5 names it (paho's spelling), e.g. 0x87 'Not authorized'."""
    return _REASON_NAMES.get(code, f"reason code {code:#04x}")
