"""One MQTT connection through paho-mqtt 2.x, driven by the asyncio loop (``mqtt.client = paho``).

Kept beside the native client (``collector/adapters/mqttconn.py``, the default) so the two can be
compared in one benchmark run, and as a fallback. Same interface as ``MqttConnection``; the
MQTT adapter (``collector/adapters/mqtt.py``) does the rest.

paho's ``manual_ack`` lets us send each PUBACK only once the message is safe. The socket is
driven the way aiomqtt drives it (``add_reader``/``add_writer`` on the loop, ``loop_misc`` once a
second). ``BufferedClient`` replaces paho's byte-at-a-time socket reads with one 64 KiB read
served from a buffer (``bench/ingest.py`` measures it against stock paho).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.adapters.mqtt import CONNECT_TIMEOUT_S
from collector.adapters.mqttconn import Receiver
from collector.adapters.mqttparser import ConnAck
from parkwatch.errors import SourceError
from parkwatch.settings import MqttSettings

__all__ = ["BufferedClient", "PahoConnection"]

READ_CHUNK: Final = 65536


class BufferedClient(paho.Client):
    """paho Client whose socket reads fill a buffer in large chunks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_buffer = bytearray()

    def _sock_recv(self, bufsize: int) -> bytes:
        buffer = self.read_buffer
        if not buffer:
            data = super()._sock_recv(READ_CHUNK)
            if not data:
                return data  # EOF: paho treats it as connection lost
            buffer += data
        chunk = bytes(buffer[:bufsize])
        del buffer[:bufsize]
        return chunk

    def buffered(self) -> bool:
        """Whether bytes are waiting in the buffer (or in the TLS layer)."""
        if self.read_buffer:
            return True
        sock = self.socket()
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _codes(reasons: list[ReasonCode]) -> list[int]:
    return [int(reason.value) for reason in reasons]


class PahoConnection:
    """One connection to the broker through a paho client; see the module docstring."""

    def __init__(
        self, settings: MqttSettings, receiver: Receiver, *, buffered: bool = True
    ) -> None:
        self._settings = settings
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._client = self._make_client(buffered)
        self._fd: int | None = None
        self._reading = True
        self._abandoned = False
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        self._answers: dict[int, asyncio.Future[list[int]]] = {}  # mid -> SUBACK/UNSUBACK

    def _make_client(self, buffered: bool) -> paho.Client:
        s = self._settings
        v5 = s.protocol == "5"
        factory = BufferedClient if buffered else paho.Client
        client = factory(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        credentials = s.credentials()
        if credentials is not None:
            client.username_pw_set(*credentials)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
            )
            client.tls_insecure_set(s.tls_insecure)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_answer
        client.on_unsubscribe = self._on_answer
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def is_open(self) -> bool:
        """Whether the socket is open."""
        return self._fd is not None

    # -- the MqttConnection interface ----------------------------------------------------------

    async def open(self) -> ConnAck:
        """Connect and await CONNACK; ``SourceError`` if the broker refuses us."""
        s = self._settings
        kwargs: dict[str, Any] = {}
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
            kwargs = {"clean_start": False, "properties": props}
        await asyncio.to_thread(self._client.connect, s.host, s.port, s.keepalive_s, **kwargs)
        return await self._connack

    async def subscribe(self, filters: list[str]) -> list[int]:
        """SUBSCRIBE at QoS 1; the broker's reason code per filter."""
        result, mid = self._client.subscribe([(topic, 1) for topic in filters])
        return await self._answer(result, mid)

    async def unsubscribe(self, filters: list[str]) -> None:
        """UNSUBSCRIBE and await the answer."""
        result, mid = self._client.unsubscribe(filters)
        await self._answer(result, mid)

    def _answer(self, result: MQTTErrorCode, mid: int | None) -> asyncio.Future[list[int]]:
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise SourceError(f"connection lost: {result}")
        future: asyncio.Future[list[int]] = self._loop.create_future()
        self._answers[mid] = future
        return future

    def ack(self, packet_id: int, qos: int) -> None:
        """PUBACK (QoS 1) or PUBREC (QoS 2)."""
        self._client.ack(packet_id, qos)

    def set_reading(self, on: bool) -> None:
        """Read the socket or not (the broker keeps what we do not read)."""
        if on == self._reading:
            return
        self._reading = on
        if self._fd is None:
            return
        if on:
            self._loop.add_reader(self._fd, self._readable)
            client = self._client
            if isinstance(client, BufferedClient) and client.buffered():
                # Bytes already buffered will not make the socket readable again.
                self._loop.call_soon(self._readable)
        else:
            self._loop.remove_reader(self._fd)

    def disconnect(self, reason_code: int = 0) -> None:
        """Send DISCONNECT; paho then closes the socket."""
        self._client.disconnect()

    def abort(self) -> None:
        """Give the connection up, without reporting it lost (a failed attempt)."""
        self._abandoned = True
        self._client.disconnect()

    def keep_alive(self) -> None:
        """paho's housekeeping: keepalive pings."""
        if self._fd is not None:
            self._client.loop_misc()

    # -- socket plumbing (paho calls these; connect() calls some from a worker thread) --------

    def _in_loop(self, func: Any, *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            func(*args)
        else:
            self._loop.call_soon_threadsafe(func, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._attach, sock.fileno())

    def _attach(self, fd: int) -> None:
        self._fd = fd
        if self._reading:
            self._loop.add_reader(fd, self._readable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._detach, self._fd)

    def _detach(self, fd: int | None) -> None:
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if fd == self._fd:
            self._fd = None

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock.fileno(), self._client.loop_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_writer, sock.fileno())

    def _readable(self) -> None:
        client = self._client
        buffered = isinstance(client, BufferedClient)
        # loop_read handles one packet; keep going while bytes are buffered, unless the receiver
        # stopped the reading (then it resumes it once it may read again).
        while self._reading:
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if not (buffered and client.buffered()):  # type: ignore[attr-defined]
                return

    # -- paho callbacks (on the loop thread, inside loop_read; on_disconnect maybe not) ------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._fail(SourceError(f"broker refused connection: {reason}"))
        elif not self._connack.done():
            self._connack.set_result(ConnAck(int(reason.value), flags.session_present))

    def _on_answer(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._answers.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(_codes(reasons))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._in_loop(self._lost, str(reason), getattr(reason, "value", None))

    def _lost(self, reason: str, code: int | None) -> None:
        self._fail(SourceError(f"disconnected: {reason}"))
        if not self._abandoned:
            self._receiver.lost(reason, code)

    def _fail(self, error: SourceError) -> None:
        futures: list[asyncio.Future[Any]] = [self._connack, *self._answers.values()]
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._answers.clear()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        qos, retain = message.qos, int(message.retain)
        self._receiver.take_in([(message._topic, payload, message.mid, qos, retain, len(payload))])
