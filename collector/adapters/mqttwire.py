"""The MQTT 5 / 3.1.1 wire format for a subscriber: the packets it sends, and a streaming parser
for the packets a broker sends it. Pure functions over bytes: no I/O, no clock.

Why hand-rolled (the project prefers libraries): paho-mqtt builds an MQTT 5 ``Properties``
object for every incoming PUBLISH (``Properties.__init__``/``clear``/``__setattr__`` were ~20 %
of the collector's own CPU time in a py-spy profile of ``bench.drain``) and hands messages over
one callback at a time; gmqtt, fast (~49k msg/s bare in ``bench.drain``), cannot defer a PUBACK
without a task per message; aiomqtt acks on receipt. A subscriber needs only a few packets, and
the hot one, PUBLISH, is a few slices of a ``bytes`` object: ``Parser.parse`` cuts many of them
out of each read in one loop (figures: the README's Benchmarks section, ``bench.ingest``).

The parser is fed whatever the socket delivers (packets split across reads, many packets per
read). ``parse`` returns the PUBLISHes before the next other packet, up to a message and a byte
budget (flow control: what is not parsed stays buffered), plus that other packet. A packet is
joined from its reads once it is complete, so a large one costs one copy, not one per read.
Anything that is not valid MQTT raises ``ProtocolError`` (and nothing else). Topic aliases are
refused: we announce no Topic Alias Maximum, so a broker must not use them.

A PUBLISH comes out as a plain tuple, the hot path's cheapest object: see ``Publish``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from parkwatch.errors import SourceError

__all__ = [
    "MQTT_5",
    "MQTT_311",
    "PINGREQ",
    "ConnAck",
    "Disconnect",
    "Packet",
    "Parser",
    "PingResp",
    "ProtocolError",
    "PubRel",
    "Publish",
    "SubAck",
    "UnsubAck",
    "encode_ack",
    "encode_connack",
    "encode_connect",
    "encode_disconnect",
    "encode_properties",
    "encode_publish",
    "encode_suback",
    "encode_subscribe",
    "encode_unsuback",
    "encode_unsubscribe",
    "reason_name",
]

MQTT_311: Final = 4  # protocol level in CONNECT
MQTT_5: Final = 5

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ_TYPE, PINGRESP, DISCONNECT = range(8, 15)

PINGREQ: Final = b"\xc0\x00"
PINGRESP_BYTES: Final = b"\xd0\x00"
MAX_REMAINING: Final = 268_435_455  # the largest remaining length four varint bytes can say
MALFORMED: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
TOPIC_ALIAS_INVALID: Final = 0x94

Publish = tuple[bytes, bytes, int, int, int, int]
"""(topic, payload, packet id (0 for QoS 0), QoS, retain (0/1), payload size as received).

``payload`` holds only the first ``keep`` bytes of a non-retained payload over the parser's
``payload_limit`` (it will be dead-lettered as too large); the size says how large it was."""


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


# -- what a broker sends (encoders for fakes and tests; decoded by Parser) -----------------------


def encode_connack(
    reason_code: int = 0,
    *,
    version: int,
    session_present: bool = False,
    properties: Properties | None = None,
) -> bytes:
    """CONNACK (for 3.1.1, ``reason_code`` is the return code 0-5)."""
    body = bytes((1 if session_present else 0, reason_code))
    if version == MQTT_5:
        body += encode_properties(properties or {})
    return _packet(CONNACK << 4, body)


def encode_suback(packet_id: int, codes: list[int], *, version: int) -> bytes:
    """SUBACK with one granted QoS or failure code per filter."""
    props = encode_properties({}) if version == MQTT_5 else b""
    return _packet(SUBACK << 4, struct.pack(">H", packet_id) + props + bytes(codes))


def encode_unsuback(packet_id: int, codes: list[int], *, version: int) -> bytes:
    """UNSUBACK (3.1.1 has no codes)."""
    if version != MQTT_5:
        return _packet(UNSUBACK << 4, struct.pack(">H", packet_id))
    body = struct.pack(">H", packet_id) + encode_properties({}) + bytes(codes)
    return _packet(UNSUBACK << 4, body)


def encode_publish(
    topic: str | bytes,
    payload: bytes,
    *,
    version: int,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    dup: bool = False,
    properties: Properties | None = None,
) -> bytes:
    """PUBLISH as a broker sends it."""
    name = topic.encode() if isinstance(topic, str) else topic
    body = _string(name) + (struct.pack(">H", packet_id) if qos else b"")
    if version == MQTT_5:
        body += encode_properties(properties or {})
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    return _packet(first, body + payload)


# -- what a broker sends, decoded ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnAck:
    """The broker's answer to CONNECT (3.1.1 return codes mapped to MQTT 5 reason codes)."""

    reason_code: int
    session_present: bool
    properties: Properties = field(default_factory=dict)

    @property
    def server_keep_alive(self) -> int | None:
        """The keepalive the broker imposes instead of ours (MQTT 5), if any."""
        value: int | None = self.properties.get(SERVER_KEEP_ALIVE)
        return value

    @property
    def receive_maximum(self) -> int:
        """QoS 1/2 PUBLISHes the broker accepts from us unacked (65535 when not given)."""
        value: int = self.properties.get(RECEIVE_MAXIMUM, 65535)
        return value


@dataclass(frozen=True, slots=True)
class SubAck:
    """The broker's answer to SUBSCRIBE: granted QoS or a failure code (>= 0x80) per filter."""

    packet_id: int
    reason_codes: list[int]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """The broker's answer to UNSUBSCRIBE."""

    packet_id: int
    reason_codes: list[int]


@dataclass(frozen=True, slots=True)
class PubRel:
    """Second step of an incoming QoS 2 PUBLISH: answer with PUBCOMP."""

    packet_id: int
    reason_code: int = 0


@dataclass(frozen=True, slots=True)
class PingResp:
    """The broker's answer to PINGREQ."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The broker closes the connection and says why (MQTT 5), e.g. 0x8E session taken over."""

    reason_code: int
    properties: Properties = field(default_factory=dict)

    @property
    def reason_string(self) -> str | None:
        """The broker's explanation, if it gave one."""
        value: str | None = self.properties.get(REASON_STRING)
        return value


Packet = ConnAck | SubAck | UnsubAck | PubRel | PingResp | Disconnect
_311_CONNACK: Final = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


class Parser:
    """Cuts the broker's byte stream into packets; see the module docstring."""

    def __init__(self, version: int, *, payload_limit: int | None = None, keep: int = 0) -> None:
        self._v5 = version == MQTT_5
        self._limit = payload_limit if payload_limit is not None else MAX_REMAINING
        self._keep = keep
        self._buffer = b""  # unparsed bytes start at _pos
        self._pos = 0
        self._chunks: list[bytes] = []  # fed, not yet joined onto the buffer
        self._available = 0  # bytes unparsed, buffer and chunks together
        self._need = 0  # bytes the next packet needs in all, once its header is known

    @property
    def buffered(self) -> int:
        """Bytes fed and not parsed yet."""
        return self._available

    def feed(self, data: bytes) -> None:
        """Add bytes as read from the socket."""
        self._chunks.append(data)
        self._available += len(data)

    def parse(self, max_messages: int, max_bytes: int) -> tuple[list[Publish], Packet | None]:
        """PUBLISHes up to the next other packet, and that packet (None: none is complete yet).

        Stops before a PUBLISH once ``max_messages`` were returned or the topic and payload
        bytes returned exceed ``max_bytes``; what is left stays buffered. Other packets are
        returned whatever the budget.
        """
        if self._chunks:
            if self._available < self._need:
                return [], None  # the next packet is still incomplete: do not join yet
            self._buffer = b"".join([self._buffer[self._pos :], *self._chunks])
            self._pos = 0
            self._chunks.clear()
        buf, pos = self._buffer, self._pos
        end = len(buf)
        out: list[Publish] = []
        control: Packet | None = None
        taken = 0
        self._need = 0
        try:
            while pos + 2 <= end:
                first = buf[pos]
                publish = first >> 4 == PUBLISH
                if publish and (len(out) >= max_messages or taken > max_bytes):
                    break  # out of budget: the PUBLISH waits (control packets never do)
                length = buf[pos + 1]
                head = pos + 2
                if length & 0x80:
                    length, head = _remaining_length(buf, pos + 1, end)
                    if head < 0:
                        break  # the length itself is incomplete
                stop = head + length
                if stop > end:
                    self._need = stop - pos
                    break
                if not publish:
                    control = _control(first, buf[head:stop], v5=self._v5)
                    pos = stop
                    break
                message = self._publish(buf, first, head, stop)
                pos = stop
                out.append(message)
                taken += len(message[0]) + len(message[1])
        except (IndexError, ProtocolError) as exc:
            if not out:  # else: return the good ones first; the next call raises
                if isinstance(exc, ProtocolError):
                    raise
                raise ProtocolError("a packet is shorter than its fields") from None
        self._available -= pos - self._pos
        self._pos = pos
        if pos == end:
            self._buffer, self._pos = b"", 0  # let a large packet go
        return out, control

    def _publish(self, buf: bytes, first: int, head: int, stop: int) -> Publish:
        """The PUBLISH whose variable header starts at ``head`` and which ends at ``stop``."""
        qos = (first >> 1) & 3
        if head + 2 > stop or qos == 3:
            raise ProtocolError("PUBLISH without a topic length, or with QoS 3")
        start = head + 2 + ((buf[head] << 8) | buf[head + 1])
        topic = buf[head + 2 : start]
        packet_id = 0
        if qos:
            packet_id = (buf[start] << 8) | buf[start + 1]
            start += 2
            if not packet_id:
                raise ProtocolError("PUBLISH with packet id 0")
        if self._v5:
            if start < stop and not buf[start]:
                start += 1  # no properties: the usual case
            else:
                start = _skip_publish_properties(buf, start, stop)
        if start > stop:
            raise ProtocolError("PUBLISH shorter than its fields")
        if not topic:
            raise ProtocolError("PUBLISH without a topic name (an alias?)", PROTOCOL_ERROR)
        size = stop - start
        retain = first & 1
        if size > self._limit and not retain:
            return topic, buf[start : start + self._keep], packet_id, qos, retain, size
        return topic, buf[start:stop], packet_id, qos, retain, size


def _control(first: int, body: bytes, *, v5: bool) -> Packet:
    """A packet other than PUBLISH, from its first byte and its body."""
    kind, flags = first >> 4, first & 0x0F
    if flags != (0x02 if kind == PUBREL else 0):
        raise ProtocolError(f"packet type {kind} with flags {flags:#x}")
    decode = _CONTROL.get(kind)
    if decode is None:
        raise ProtocolError(f"a broker does not send packet type {kind} to a subscriber")
    return decode(body, v5)


def _connack(body: bytes, v5: bool) -> Packet:
    size = len(body)
    if size < 2 or body[0] > 1 or (not v5 and size != 2):
        raise ProtocolError("malformed CONNACK")
    if v5:
        return ConnAck(body[1], bool(body[0]), _properties_at(body, 2, size, exact=True))
    if body[1] not in _311_CONNACK:
        raise ProtocolError(f"CONNACK return code {body[1]}")
    return ConnAck(_311_CONNACK[body[1]], bool(body[0]))


def _suback(body: bytes, v5: bool) -> Packet:
    if len(body) < 3:
        raise ProtocolError("malformed SUBACK")
    codes = list(body[_skip_properties(body, 2, len(body)) if v5 else 2 :])
    if not codes:
        raise ProtocolError("SUBACK without reason codes")
    return SubAck(int.from_bytes(body[:2], "big"), codes)


def _unsuback(body: bytes, v5: bool) -> Packet:
    if len(body) < 2 or (not v5 and len(body) != 2):
        raise ProtocolError("malformed UNSUBACK")
    codes = list(body[_skip_properties(body, 2, len(body)) :]) if v5 else []
    return UnsubAck(int.from_bytes(body[:2], "big"), codes)


def _pubrel(body: bytes, v5: bool) -> Packet:
    size = len(body)
    if size < 2 or (not v5 and size != 2):
        raise ProtocolError("malformed PUBREL")
    if size > 3:
        _properties_at(body, 3, size, exact=True)
    return PubRel(int.from_bytes(body[:2], "big"), body[2] if size > 2 else 0)


def _pingresp(body: bytes, v5: bool) -> Packet:
    if body:
        raise ProtocolError("PINGRESP with a body")
    return PingResp()


def _disconnect(body: bytes, v5: bool) -> Packet:
    if not body:
        return Disconnect(0)
    if not v5:
        raise ProtocolError("MQTT 3.1.1 DISCONNECT with a body")
    properties = _properties_at(body, 1, len(body), exact=True) if len(body) > 1 else {}
    return Disconnect(body[0], properties)


_CONTROL: Final[dict[int, Callable[[bytes, bool], Packet]]] = {
    CONNACK: _connack,
    SUBACK: _suback,
    UNSUBACK: _unsuback,
    PUBREL: _pubrel,
    PINGRESP: _pingresp,
    DISCONNECT: _disconnect,
}


def _remaining_length(buf: bytes, at: int, end: int) -> tuple[int, int]:
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


def _skip_properties(buf: bytes, at: int, stop: int) -> int:
    """The index after the property block at ``at`` (checked to lie within ``stop``)."""
    length, start = _remaining_length(buf, at, stop)
    if start < 0 or start + length > stop:
        raise ProtocolError("properties longer than their packet")
    return start + length


def _skip_publish_properties(buf: bytes, at: int, stop: int) -> int:
    """Skip a PUBLISH's properties, refusing a topic alias (we allowed none)."""
    end = _skip_properties(buf, at, stop)
    properties = _properties_at(buf, at, end, exact=True)
    if TOPIC_ALIAS in properties:
        raise ProtocolError("the broker used a topic alias; we allowed none", TOPIC_ALIAS_INVALID)
    return end


def _properties_at(buf: bytes, at: int, stop: int, *, exact: bool) -> Properties:
    """Decode the property block at ``at``; with ``exact`` it must end at ``stop``."""
    length, index = _remaining_length(buf, at, stop)
    end = index + length
    if index < 0 or end > stop or (exact and end != stop):
        raise ProtocolError("properties do not fit their packet")
    out: Properties = {}
    try:
        while index < end:
            ident, index = _remaining_length(buf, index, end)
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
    _VARINT: _remaining_length,
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
