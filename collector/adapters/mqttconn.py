"""One MQTT connection of the native client: an asyncio ``Protocol`` over ``mqttwire`` (what we
send) and ``mqttparser`` (what the broker sends).

The MQTT adapter (``collector/adapters/mqtt.py``) owns the delivery logic; this module moves
packets. It connects (TCP or TLS), sends CONNECT and waits for CONNACK, subscribes, answers the
broker (PUBREL -> PUBCOMP, PINGRESP), pings within the keepalive, and hands PUBLISHes over in
batches: every ``data_received`` parses what the read brought, up to the budget the adapter gives
(unacked messages, bytes held), and passes them on in one ``take_in`` call. Acks are queued and
written together on the loop's next turn (one ``transport.write`` for a whole settled batch),
always before anything sent later, so an UNSUBSCRIBE sent after them proves they arrived.
Reading stops and resumes with the transport's ``pause_reading``/``resume_reading``: TCP then
keeps what we do not take at the broker.

Why not paho-mqtt, gmqtt or aiomqtt: see ``collector/adapters/mqttwire.py``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Final, Protocol

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
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBREC,
    ProtocolError,
    encode_ack,
    encode_connect,
    encode_disconnect,
    encode_subscribe,
    encode_unsubscribe,
    reason_name,
)
from parkwatch.errors import SourceError
from parkwatch.settings import MqttSettings

__all__ = ["MqttConnection", "Receiver", "tls_context"]

log = logging.getLogger(__name__)

_PUBACK: Final = encode_ack(PUBACK, 0)[:2]  # first two bytes of every PUBACK
TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0


class Receiver(Protocol):
    """What a connection delivers to: the MQTT adapter."""

    def budget(self) -> tuple[int, int]:
        """PUBLISHes and payload bytes that may be taken in now ((0, -1): none)."""

    def take_in(self, publishes: list[Publish]) -> None:
        """PUBLISHes as they arrived, in order."""

    def lost(self, reason: str, code: int | None) -> None:
        """The connection is gone (``code``: the broker's DISCONNECT reason code, if any)."""


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """The TLS context of ``mqtts://`` URLs: the CA (or the system's), a client certificate,
    and ``tls_insecure`` (no host name check, as paho's ``tls_insecure_set``)."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if settings.cert_file is not None:
        key = str(settings.key_file) if settings.key_file else None
        context.load_cert_chain(str(settings.cert_file), key, password=lambda: b"")
    if settings.tls_insecure:
        context.check_hostname = False
    return context


class MqttConnection(asyncio.Protocol):
    """One connection to the broker, for one subscriber session; see the module docstring."""

    def __init__(
        self,
        settings: MqttSettings,
        receiver: Receiver,
        *,
        payload_limit: int | None = None,
        keep: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._receiver = receiver
        self.version = MQTT_5 if settings.protocol == "5" else MQTT_311
        self._parser = Parser(self.version, payload_limit=payload_limit, keep=keep)
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reading = True
        self._abandoned = False
        self._acks: list[bytes] = []  # queued acks, written on the loop's next turn
        self._waiting: dict[tuple[type, int], asyncio.Future[Packet]] = {}
        self._packet_id = 0
        self._closing_reason: str | None = None  # why we closed, or what the broker said
        self._closing_code: int | None = None
        self.keepalive = settings.keepalive_s
        self._last_in = self._last_out = clock()
        self._ping_sent: float | None = None

    @property
    def is_open(self) -> bool:
        """Whether the connection is up and not being closed."""
        return self._transport is not None and not self._transport.is_closing()

    # -- connecting ----------------------------------------------------------------------------

    async def open(self) -> ConnAck:
        """Connect, send CONNECT, await CONNACK; ``SourceError`` if the broker refuses us."""
        s = self._settings
        tls = tls_context(s) if s.tls else None
        await self._loop.create_connection(
            lambda: self,
            s.host,
            s.port,
            ssl=tls,
            server_hostname=s.host if tls else None,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if tls else None,
        )
        credentials = s.credentials()
        self._write(
            encode_connect(
                s.client_id,
                version=self.version,
                keepalive=s.keepalive_s,
                session_expiry=s.session_expiry_s,
                receive_maximum=s.receive_maximum,
                username=credentials[0] if credentials else None,
                password=credentials[1] if credentials else None,
            )
        )
        connack = await self._answer(ConnAck, 0)
        assert isinstance(connack, ConnAck)
        if connack.reason_code >= 0x80:  # failure codes start there
            self.abort()
            raise SourceError(f"broker refused connection: {reason_name(connack.reason_code)}")
        if connack.server_keep_alive is not None:
            self.keepalive = connack.server_keep_alive  # the broker's word wins (MQTT 5)
        return connack

    async def subscribe(self, filters: list[str]) -> list[int]:
        """SUBSCRIBE at QoS 1; the broker's reason code per filter (>= 0x80: refused)."""
        packet_id = self._next_id()
        self._write(encode_subscribe(packet_id, filters, version=self.version))
        suback = await self._answer(SubAck, packet_id)
        assert isinstance(suback, SubAck)
        return suback.reason_codes

    async def unsubscribe(self, filters: list[str]) -> None:
        """UNSUBSCRIBE and await the answer: the broker has read everything we sent before."""
        packet_id = self._next_id()
        self._write(encode_unsubscribe(packet_id, filters, version=self.version))
        await self._answer(UnsubAck, packet_id)

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    def _answer(self, kind: type, packet_id: int) -> asyncio.Future[Packet]:
        if self._transport is None:
            raise SourceError(f"connection lost: {self._closing_reason or 'not connected'}")
        future: asyncio.Future[Packet] = self._loop.create_future()
        self._waiting[(kind, packet_id)] = future
        return future

    # -- writing -------------------------------------------------------------------------------

    def ack(self, packet_id: int, qos: int) -> None:
        """Acknowledge a message: PUBACK (QoS 1) or PUBREC (QoS 2), written with the others."""
        if self._transport is None:
            return  # gone: the broker redelivers it to the next connection
        if not self._acks:
            self._loop.call_soon(self._flush)
        if qos == 1:
            self._acks.append(_PUBACK + packet_id.to_bytes(2, "big"))
        else:
            self._acks.append(encode_ack(PUBREC, packet_id))

    def _flush(self) -> None:
        if self._acks and self.is_open:
            assert self._transport is not None
            self._transport.write(b"".join(self._acks))
            self._last_out = self._clock()
        self._acks.clear()

    def _write(self, data: bytes) -> None:
        """Send a packet after every ack queued before it."""
        self._acks.append(data)
        self._flush()

    def disconnect(self, reason_code: int = 0) -> None:
        """Send DISCONNECT (after the queued acks); the broker then closes the connection."""
        if self._transport is not None:
            self._write(encode_disconnect(reason_code, version=self.version))

    def abort(self) -> None:
        """Give the connection up at once, without reporting it lost (a failed attempt)."""
        self._abandoned = True
        if self._transport is not None:
            self._transport.abort()

    # -- reading -------------------------------------------------------------------------------

    def set_reading(self, on: bool) -> None:
        """Read the socket or not (the broker keeps what we do not read)."""
        if on == self._reading:
            return
        self._reading = on
        if self._transport is None:
            return  # applied once connected
        if on:
            self._transport.resume_reading()
            if self._parser.buffered:
                self._loop.call_soon(self._drain)  # bytes already read will not come again
            self._last_in = self._clock()  # the broker could not reach us while we paused
        else:
            self._transport.pause_reading()
            self._ping_sent = None  # its answer waits unread: no keepalive verdict now

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: connected (the TLS handshake done)."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._reading:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the broker."""
        self._last_in = self._clock()
        self._parser.feed(data)
        self._drain()

    def _drain(self) -> None:
        receiver, parser = self._receiver, self._parser
        try:
            while self._reading and self.is_open:
                publishes, packet = parser.parse(*receiver.budget())
                if publishes:
                    receiver.take_in(publishes)
                if packet is not None:
                    self._handle(packet)
                elif not publishes:
                    return  # wait for more bytes, or for budget
        except ProtocolError as exc:
            log.warning("broker sent an invalid packet: %s; reconnecting", exc)
            self.disconnect(exc.reason_code)
            self._closing_reason, self._closing_code = f"protocol error: {exc}", None
            if self._transport is not None:
                self._transport.close()

    def _handle(self, packet: Packet) -> None:
        if isinstance(packet, PubRel):
            self._write(encode_ack(PUBCOMP, packet.packet_id))
        elif isinstance(packet, PingResp):
            self._ping_sent = None
        elif isinstance(packet, Disconnect):
            reason = reason_name(packet.reason_code)
            if packet.reason_string:
                reason += f" ({packet.reason_string})"
            self._closing_reason, self._closing_code = reason, packet.reason_code
            if self._transport is not None:
                self._transport.close()
        else:
            key = (type(packet), 0 if isinstance(packet, ConnAck) else packet.packet_id)
            future = self._waiting.pop(key, None)
            if future is None:
                raise ProtocolError(f"unexpected {type(packet).__name__}", 0x82)
            if not future.done():  # else: we stopped waiting (a timeout); it came late
                future.set_result(packet)

    def eof_received(self) -> bool:
        """asyncio: the broker closed its side; close ours."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection is gone; tell whoever waits, then the receiver."""
        self._transport = None
        self._acks.clear()
        reason = self._closing_reason or (str(exc) if exc else "connection closed by the broker")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(SourceError(f"connection lost: {reason}"))
        self._waiting.clear()
        if not self._abandoned:
            self._receiver.lost(reason, self._closing_code)

    # -- keepalive -----------------------------------------------------------------------------

    def keep_alive(self) -> None:
        """Call about once a second: ping when idle, drop a broker that stopped answering.

        While the reading is off (the pipeline is full), the broker's answers wait unread: we
        go on pinging every keepalive, so the broker keeps us, but judge nothing."""
        if not self.is_open or not self.keepalive:
            return
        assert self._transport is not None
        now = self._clock()
        if self._ping_sent is not None and now - self._ping_sent >= self.keepalive:
            self._closing_reason = f"no answer to PINGREQ in {self.keepalive} s"
            self._transport.abort()
            return
        idle_in = now - self._last_in if self._reading else 0.0
        if now - self._last_out >= self.keepalive or (
            idle_in >= self.keepalive and self._ping_sent is None
        ):
            self._write(PINGREQ)
            if self._reading and self._ping_sent is None:
                self._ping_sent = now
