"""A scripted fake MQTT broker for the native client's unit tests: encoders of the packets a broker
sends and a decoder of those a client sends (written apart from ``collector/adapters/mqttwire.py``
and ``mqttparser.py``, so round trips check one implementation against another; only the
property encoder, a table of the standard, is shared).

Mosquitto cannot be made to send what these tests need (a DISCONNECT 0x8E, a topic alias, a
QoS 2 delivery to a QoS 1 subscription, a server keep alive, garbage); everything else is tested
against the real Mosquitto in ``test_mqtt.py``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from collector.adapters.mqttwire import MQTT_5, Properties, encode_properties

# -- what a broker sends, encoded (read by collector/adapters/mqttparser.py) ---------------------

CONNACK, PUBLISH, SUBACK, UNSUBACK = 2, 3, 9, 11


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pack_string(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


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
    body = _pack_string(name) + (struct.pack(">H", packet_id) if qos else b"")
    if version == MQTT_5:
        body += encode_properties(properties or {})
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    return _packet(first, body + payload)


# -- what a client sends, decoded ---------------------------------------------------------------

RawPacket = tuple[int, int, bytes]
"""(packet type, flags, body) of a packet as framed by its fixed header."""


def frame(data: bytes) -> tuple[list[RawPacket], bytes]:
    """Complete packets at the front of ``data``, and the incomplete rest."""
    packets: list[RawPacket] = []
    pos = 0
    while pos + 2 <= len(data):
        length, shift, index = 0, 0, pos + 1
        while True:
            if index >= len(data):
                return packets, data[pos:]
            byte = data[index]
            length |= (byte & 0x7F) << shift
            index += 1
            if not byte & 0x80:
                break
            shift += 7
        if index + length > len(data):
            break
        packets.append((data[pos] >> 4, data[pos] & 0x0F, data[index : index + length]))
        pos = index + length
    return packets, data[pos:]


def _string(body: bytes, at: int) -> tuple[bytes, int]:
    (size,) = struct.unpack_from(">H", body, at)
    return body[at + 2 : at + 2 + size], at + 2 + size


def _properties(body: bytes, at: int) -> tuple[dict[int, Any], int]:
    """Only the properties a subscriber's CONNECT may carry."""
    length, shift = 0, 0
    while True:
        byte = body[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    end, out = at + length, {}
    sizes = {0x11: 4, 0x21: 2, 0x22: 2, 0x27: 4, 0x17: 1, 0x19: 1}
    while at < end:
        ident = body[at]
        size = sizes[ident]  # KeyError: a property this fake does not expect
        out[ident] = int.from_bytes(body[at + 1 : at + 1 + size], "big")
        at += 1 + size
    return out, end


@dataclass
class Connect:
    """A decoded CONNECT."""

    version: int
    clean_start: bool
    keepalive: int
    client_id: str
    properties: dict[int, Any] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None


def decode_connect(body: bytes) -> Connect:
    """Decode a CONNECT body (no will: a subscriber sends none)."""
    name, at = _string(body, 0)
    assert name == b"MQTT"
    version, flags = body[at], body[at + 1]
    (keepalive,) = struct.unpack_from(">H", body, at + 2)
    at += 4
    properties: dict[int, Any] = {}
    if version == 5:
        properties, at = _properties(body, at)
    client_id, at = _string(body, at)
    connect = Connect(version, bool(flags & 0x02), keepalive, client_id.decode(), properties)
    assert not flags & 0x04, "no will expected"
    if flags & 0x80:
        user, at = _string(body, at)
        connect.username = user.decode()
    if flags & 0x40:
        password, at = _string(body, at)
        connect.password = password.decode()
    assert at == len(body)
    return connect


def decode_subscribe(body: bytes, version: int) -> tuple[int, list[tuple[str, int]]]:
    """(packet id, [(filter, options byte)]) of a SUBSCRIBE body."""
    (packet_id,) = struct.unpack_from(">H", body, 0)
    at = 2
    if version == 5:
        _, at = _properties(body, at)
    filters = []
    while at < len(body):
        name, at = _string(body, at)
        filters.append((name.decode(), body[at]))
        at += 1
    return packet_id, filters


def decode_unsubscribe(body: bytes, version: int) -> tuple[int, list[str]]:
    """(packet id, filters) of an UNSUBSCRIBE body."""
    (packet_id,) = struct.unpack_from(">H", body, 0)
    at = 2
    if version == 5:
        _, at = _properties(body, at)
    filters = []
    while at < len(body):
        name, at = _string(body, at)
        filters.append(name.decode())
    return packet_id, filters


class FakeClientConnection:
    """The broker's side of one client connection: packets read, bytes to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._rest = b""
        self._packets: list[RawPacket] = []

    async def next_packet(self, timeout: float = 10.0) -> RawPacket:  # noqa: ASYNC109
        """The next packet the client sent (EOFError once it closed)."""
        async with asyncio.timeout(timeout):
            while not self._packets:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the client closed the connection")
                packets, self._rest = frame(self._rest + data)
                self._packets += packets
        return self._packets.pop(0)

    async def expect(self, kind: int, timeout: float = 10.0) -> RawPacket:  # noqa: ASYNC109
        """The next packet, which must be of type ``kind``."""
        packet = await self.next_packet(timeout)
        assert packet[0] == kind, f"expected packet type {kind}, got {packet}"
        return packet

    async def closed(self, timeout: float = 10.0) -> list[RawPacket]:  # noqa: ASYNC109
        """Wait for the client to close the connection; return what it sent until then."""
        seen: list[RawPacket] = []
        try:
            while True:
                seen.append(await self.next_packet(timeout))
        except (EOFError, ConnectionResetError):
            return seen

    def send(self, data: bytes) -> None:
        """Write bytes to the client."""
        self.writer.write(data)

    def close(self) -> None:
        """Close the connection from the broker's side."""
        self.writer.close()


class FakeBroker:
    """A TCP server on a free loopback port; each connection is handed to the test."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[FakeClientConnection] = asyncio.Queue()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: list[FakeClientConnection] = []

    @property
    def url(self) -> str:
        """mqtt:// URL of the fake."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def accept(self, timeout: float = 10.0) -> FakeClientConnection:  # noqa: ASYNC109
        """The next client connection."""
        async with asyncio.timeout(timeout):
            return await self.connections.get()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = FakeClientConnection(reader, writer)
        self._open.append(connection)
        await self.connections.put(connection)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBroker]:
        """Serve until the block ends; then close every connection."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            for connection in self._open:
                connection.close()
            self._server.close()
            await self._server.wait_closed()
