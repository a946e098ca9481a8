"""Reads what an MQTT broker sends a subscriber: a streaming parser over the socket's bytes.

The parser is fed whatever the socket delivers (packets split across reads, many packets per
read). ``parse`` returns the PUBLISHes before the next other packet, up to a message and a byte
budget (flow control: what is not parsed stays buffered), plus that other packet, which no
budget holds back. A packet is joined from its reads once it is complete, so a large one costs
one copy, not one per read, and the loop does no per-byte Python work: a PUBLISH is a few
slices of one ``bytes`` object. Anything that is not valid MQTT raises ``ProtocolError`` (and
nothing else). Topic aliases are refused: we announce no Topic Alias Maximum, so a broker must
not use them. Why a parser of our own: ``collector/adapters/mqttwire.py``.

A PUBLISH comes out as a plain tuple, the hot path's cheapest object: see ``Publish``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from collector.adapters.mqttwire import (
    CONNACK,
    DISCONNECT,
    MAX_REMAINING,
    MQTT_5,
    PINGRESP,
    PROTOCOL_ERROR,
    PUBLISH,
    PUBREL,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    SUBACK,
    TOPIC_ALIAS,
    TOPIC_ALIAS_INVALID,
    UNSUBACK,
    Properties,
    ProtocolError,
    decode_properties,
    read_varint,
    skip_properties,
)

__all__ = [
    "ConnAck",
    "Disconnect",
    "Packet",
    "Parser",
    "PingResp",
    "PubRel",
    "Publish",
    "SubAck",
    "UnsubAck",
]

Publish = tuple[bytes, bytes, int, int, int, int]
"""(topic, payload, packet id (0 for QoS 0), QoS, retain (0/1), payload size as received).

``payload`` holds only the first ``keep`` bytes of a non-retained payload over the parser's
``payload_limit`` (it will be dead-lettered as too large); the size says how large it was."""


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
                    length, head = read_varint(buf, pos + 1, end)
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
        self._advance(pos)
        return out, control

    def _advance(self, pos: int) -> None:
        """The bytes before ``pos`` are parsed: forget them."""
        self._available -= pos - self._pos
        if pos == len(self._buffer):
            self._buffer, self._pos = b"", 0  # let a large packet go
        elif pos and self._need:
            self._buffer, self._pos = self._buffer[pos:], 0  # keep the incomplete packet only
        else:
            self._pos = pos

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
        return ConnAck(body[1], bool(body[0]), decode_properties(body, 2, size, exact=True))
    if body[1] not in _311_CONNACK:
        raise ProtocolError(f"CONNACK return code {body[1]}")
    return ConnAck(_311_CONNACK[body[1]], bool(body[0]))


def _suback(body: bytes, v5: bool) -> Packet:
    if len(body) < 3:
        raise ProtocolError("malformed SUBACK")
    codes = list(body[skip_properties(body, 2, len(body)) if v5 else 2 :])
    if not codes:
        raise ProtocolError("SUBACK without reason codes")
    return SubAck(int.from_bytes(body[:2], "big"), codes)


def _unsuback(body: bytes, v5: bool) -> Packet:
    if len(body) < 2 or (not v5 and len(body) != 2):
        raise ProtocolError("malformed UNSUBACK")
    codes = list(body[skip_properties(body, 2, len(body)) :]) if v5 else []
    return UnsubAck(int.from_bytes(body[:2], "big"), codes)


def _pubrel(body: bytes, v5: bool) -> Packet:
    size = len(body)
    if size < 2 or (not v5 and size != 2):
        raise ProtocolError("malformed PUBREL")
    if size > 3:
        decode_properties(body, 3, size, exact=True)
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
    properties = decode_properties(body, 1, len(body), exact=True) if len(body) > 1 else {}
    return Disconnect(body[0], properties)


_CONTROL: Final[dict[int, Callable[[bytes, bool], Packet]]] = {
    CONNACK: _connack,
    SUBACK: _suback,
    UNSUBACK: _unsuback,
    PUBREL: _pubrel,
    PINGRESP: _pingresp,
    DISCONNECT: _disconnect,
}


def _skip_publish_properties(buf: bytes, at: int, stop: int) -> int:
    """Skip a PUBLISH's properties, refusing a topic alias (we allowed none)."""
    end = skip_properties(buf, at, stop)
    properties = decode_properties(buf, at, end, exact=True)
    if TOPIC_ALIAS in properties:
        raise ProtocolError("the broker used a topic alias; we allowed none", TOPIC_ALIAS_INVALID)
    return end
