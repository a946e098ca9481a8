"""One simulated device's own MQTT connection: paho-mqtt driven by the asyncio event loop.

Every device needs its own connection for its own last will. paho-mqtt is used directly (rather
than through aiomqtt, which wraps it the same way) because a device going offline must *drop* its
connection without a DISCONNECT packet, so that the broker publishes the will; paho exposes the
socket for that, aiomqtt only offers a clean disconnect. The loop integration is paho's documented
external-loop interface: the socket callbacks register ``loop_read`` / ``loop_write`` with the
event loop, and the owner calls :meth:`DeviceLink.keepalive` about once a second.

Connecting is a blocking TCP connect inside paho (bounded by ``CONNECT_TIMEOUT_S``); on loopback or
a LAN that is well below a millisecond, so it is not worth a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from parkwatch.errors import SourceError
from simulators.faults import DeviceId

if TYPE_CHECKING:  # paho defines it for type checkers only
    from paho.mqtt.client import SocketLike

__all__ = ["CONNECT_TIMEOUT_S", "DeviceLink"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0
KEEPALIVE_S: Final = 60


class DeviceLink:
    """A device's MQTT session; reconnecting creates a fresh paho client.

    The last will (``{"online": false}``, retained, QoS 1) is set on every connection; after
    connecting the device publishes ``{"online": true, "ts": ...}`` (retained) itself. Create it
    inside the running event loop that will drive it.
    """

    def __init__(
        self,
        device: DeviceId,
        *,
        host: str,
        port: int,
        status_topic: str,
        will_payload: bytes,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.device = device
        self.host, self.port = host, port
        self.status_topic = status_topic
        self.will_payload = will_payload
        self.username, self.password = username, password
        self.client_id = client_id or f"parkwatch-sim-{device.park}-{device.kind}-{device.device}"
        self.published = 0
        """Telemetry messages handed to the broker."""
        self.acked = 0
        """Telemetry messages the broker acknowledged."""
        self._client: paho.Client | None = None
        self._pending: dict[int, bool] = {}
        """Message ids awaiting their PUBACK -> whether the message is telemetry."""
        self._drained = asyncio.Event()
        self._drained.set()
        self._connected: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    @property
    def is_connected(self) -> bool:
        """True while the broker has accepted this session and it was not dropped."""
        return self._client is not None and self._client.is_connected()

    # paho callbacks; they all run on the event loop thread inside loop_read/loop_write.

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self._connected is not None and not self._connected.done():
            if rc.is_failure:
                self._connected.set_exception(SourceError(f"{self.client_id}: broker said {rc}"))
            else:
                self._connected.set_result(None)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        if mid in self._pending:
            self.acked += self._pending.pop(mid)
            if not self._pending:
                self._drained.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._closed.set()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(SourceError(f"{self.client_id}: disconnected: {rc}"))

    # paho's external event loop interface: watch the socket for the loop.

    def _on_socket_open(self, client: paho.Client, _u: Any, sock: SocketLike) -> None:
        self._loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: SocketLike) -> None:
        self._loop.remove_reader(sock)

    def _on_socket_register_write(self, client: paho.Client, _u: Any, sock: SocketLike) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, sock: SocketLike) -> None:
        self._loop.remove_writer(sock)

    def _new_client(self) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.connect_timeout = CONNECT_TIMEOUT_S
        if self.username:
            client.username_pw_set(self.username, self.password)
        client.will_set(self.status_topic, self.will_payload, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    async def connect(self, online_payload: bytes) -> None:
        """Open a new session and announce the device online with ``online_payload``."""
        self._pending.clear()
        self._drained.set()
        self._closed.clear()
        self._connected = asyncio.get_running_loop().create_future()
        client = self._client = self._new_client()
        try:
            client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._connected
        except (OSError, TimeoutError, SourceError) as exc:
            self.abort()
            raise SourceError(
                f"{self.device.path}: cannot connect to {self.host}:{self.port}: {exc}"
            ) from exc
        self._send(self.status_topic, online_payload, status=True)

    def _send(self, topic: str, payload: bytes, *, status: bool = False) -> bool:
        if self._client is None:
            return False
        # Status messages are retained so a late subscriber learns who is online.
        info = self._client.publish(topic, payload, qos=1, retain=status)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self._pending[info.mid] = not status
        self._drained.clear()
        return True

    def publish(self, topic: str, payload: bytes) -> bool:
        """Queue one QoS 1 message; False if the session is down (the message is lost)."""
        if not self.is_connected:
            return False
        sent = self._send(topic, payload)
        self.published += sent
        return sent

    async def drain(self) -> None:
        """Wait until every queued message is acknowledged (bound it with ``asyncio.timeout``)."""
        await self._drained.wait()

    def keepalive(self) -> None:
        """Send PINGREQs when due and notice a dead broker (call about once a second)."""
        if self._client is not None:
            self._client.loop_misc()

    def drop(self) -> None:
        """Lose the connection without DISCONNECT, so the broker publishes the last will."""
        client, self._client = self._client, None
        sock = client.socket() if client is not None else None
        if client is None or sock is None:
            return
        # Shutting the socket down makes it readable at EOF: paho's reader sees the connection
        # lost and closes the socket through its own callbacks, as after a real network failure.
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client.loop_read()

    def abort(self) -> None:
        """Close the socket immediately if one is open (used on errors)."""
        self.drop()

    async def close(self, offline_payload: bytes, *, grace_s: float) -> None:
        """Say offline (retained), wait for the acks, then disconnect cleanly (no will)."""
        client = self._client
        if client is None or not self.is_connected:
            self.abort()
            return
        self._send(self.status_topic, offline_payload, status=True)
        try:
            async with asyncio.timeout(grace_s):
                await self.drain()
        except TimeoutError:
            log.warning(
                "%s: %d messages unacknowledged at close", self.device.path, len(self._pending)
            )
        client.disconnect()
        try:
            async with asyncio.timeout(grace_s):
                await self._closed.wait()
        except TimeoutError:
            log.warning("%s: no clean disconnect, dropping", self.device.path)
            self.drop()
        self._client = None
