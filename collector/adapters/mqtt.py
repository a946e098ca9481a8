"""MQTT ingest: paho-mqtt 2.x driven by the asyncio loop, acking only what the pipeline settles.

Why paho and not aiomqtt: aiomqtt acks every QoS 1 message as soon as paho hands it over, and its
bounded queue drops messages after that ack. paho's ``manual_ack`` lets us send each PUBACK only
once the message is safe (written, spooled or dead-lettered). The socket is driven the way
aiomqtt drives it (``add_reader``/``add_writer`` on the loop, ``loop_misc`` once a second).

Flow control: the broker may have ``receive_maximum`` unacked messages in flight to us (MQTT 5).
We stop reading the socket when the pipeline's inbox is full, when ``receive_maximum`` messages
are unacked (brokers do not all keep to the number once acks flow: Mosquitto 2.0.11 sent 47
unacked for 20, and MQTT 3.1.1 cannot announce it), and when the payload bytes received and not
yet settled exceed ``max_inflight_bytes``. TCP back-pressure then keeps further messages at the
broker, which holds them in our persistent session. Nothing is dropped here. A payload over the
decoder's limit (it will be dead-lettered as too large) is cut to the part a dead letter keeps as
soon as it arrives, so a backlog of huge payloads costs memory for one at a time.

Retained messages (RETAIN flag: sent again on every subscription) are state, not events: one
already handled is acked and skipped (``collector/retained.py``). Two collectors fighting over one
client id back off (``collector/adapters/takeover.py``).

``BufferedClient`` replaces paho's byte-at-a-time socket reads with one 64 KiB read served from a
buffer (``bench/ingest.py`` measures it against stock paho).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tenacity import AsyncRetrying, RetryCallState, stop_never, wait_random_exponential

from collector.acks import AckTracker
from collector.adapters.takeover import TakeoverGuard
from collector.messages import RawMessage
from collector.metrics import Metrics
from collector.retained import RetainedFilter, RetainedKey, RetainedLedger
from parkwatch.errors import SourceError
from parkwatch.settings import MqttSettings

__all__ = ["BufferedClient", "MqttSource"]

log = logging.getLogger(__name__)

READ_CHUNK: Final = 65536
CONNECT_TIMEOUT_S: Final = 10.0
MISC_INTERVAL_S: Final = 1.0
BARRIER_TIMEOUT_S: Final = 5.0
BARRIER_FILTER: Final = "$parkwatch/ack-barrier"
"""Unsubscribed from at shutdown, never subscribed to: its UNSUBACK shows our acks arrived."""


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


class MqttSource:
    """Subscribes to ``{prefix}/#`` (or ``{prefix}/{park}/#`` for each of ``mqtt.parks``) and feeds
    ``RawMessage``s into the pipeline's inbox."""

    def __init__(
        self,
        settings: MqttSettings,
        inbox: asyncio.Queue[RawMessage],
        metrics: Metrics,
        *,
        buffered: bool = True,
        connected: asyncio.Event | None = None,
        max_payload_bytes: int | None = None,
        oversize_keep_bytes: int = 4096,
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._client = self._make_client(buffered)
        self.tracker = AckTracker(self._send_ack)
        # Payloads over max_payload_bytes are cut to oversize_keep_bytes on arrival.
        self._max_payload = max_payload_bytes
        self._oversize_keep = oversize_keep_bytes
        self._held: dict[int, int] = {}  # ticket -> bytes, until settled (also across reconnects)
        self._held_bytes = 0
        self._guard = TakeoverGuard(settings, metrics)
        ledger = RetainedLedger(
            settings.retained_state_file, max_topics=settings.retained_state_max_topics
        )
        self._retained = RetainedFilter(ledger, self._settle_acks, metrics)
        self._disconnect_code: int | None = None
        self._session_up = False  # CONNACK received on the current connection
        self._overflow: deque[RawMessage] = deque()
        self._overflow_ready = asyncio.Event()
        self._fd: int | None = None
        self._reading = False
        self._paused = False
        self._ready: asyncio.Future[None] | None = None
        self._disconnected = asyncio.Event()
        self.connected = connected or asyncio.Event()
        self._stopping = False
        self._barrier: tuple[int, asyncio.Future[None]] | None = None
        metrics.unacked.set_function(lambda: self.tracker.in_flight)
        metrics.oldest_unacked.set_function(self.tracker.oldest_age)
        metrics.inflight_bytes.set_function(lambda: self._held_bytes)

    # -- client set-up -----------------------------------------------------------------------

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
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_unsubscribe = self._on_unsubscribe
        return client

    @property
    def subscriptions(self) -> list[str]:
        """The topic filters we subscribe to: every park's, or only this collector's parks'."""
        prefix = self._settings.topic_prefix
        parks = self._settings.assigned_parks()
        topics = [f"{prefix}/#"] if parks is None else [f"{prefix}/{park}/#" for park in parks]
        if self._settings.shared_group:
            return [f"$share/{self._settings.shared_group}/{topic}" for topic in topics]
        return topics

    @property
    def subscription(self) -> str:
        """The topic filters, for messages."""
        return ", ".join(self.subscriptions)

    # -- socket plumbing (paho calls these; connect() calls some from a worker thread) --------

    def _in_loop(self, func: Any, *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            func(*args)
        else:
            self._loop.call_soon_threadsafe(func, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._attach, sock.fileno())

    def _attach(self, fd: int) -> None:
        if isinstance(self._client, BufferedClient):
            self._client.read_buffer.clear()
        self._fd = fd
        self._reading = False
        self._update_reading()

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._detach, self._fd)

    def _detach(self, fd: int | None) -> None:
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if fd == self._fd:
            self._fd = None
            self._reading = False

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_writer, sock.fileno())

    def _add_writer(self, fd: int) -> None:
        self._loop.add_writer(fd, self._writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_writer, sock.fileno())

    def _writable(self) -> None:
        self._client.loop_write()

    def _update_reading(self) -> None:
        """Read the socket if ``_may_read``, else stop: the broker keeps what we do not read."""
        self._set_reading(self._may_read())

    def _set_reading(self, on: bool) -> None:
        if self._fd is None or on == self._reading:
            return
        if on:
            self._loop.add_reader(self._fd, self._readable)
            client = self._client
            if isinstance(client, BufferedClient) and client.buffered():
                # Bytes already buffered will not make the socket readable again.
                self._loop.call_soon(self._readable)
        else:
            self._loop.remove_reader(self._fd)
        self._reading = on

    def _readable(self) -> None:
        client = self._client
        buffered = isinstance(client, BufferedClient)
        # loop_read handles one packet; keep going while bytes are buffered, unless the inbox
        # filled up or too many bytes are held (then _on_message paused us, and the pump or
        # settle resumes us).
        while self._reading:
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if not (buffered and client.buffered()):  # type: ignore[attr-defined]
                return

    # -- paho callbacks (run on the loop thread, inside loop_read) -----------------------------

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
            return
        self._session_up = True
        self._guard.connected()
        log.log(
            logging.DEBUG if self._guard.strikes else logging.INFO,  # quiet while flapping
            "connected to %s (session present: %s)",
            self._settings.redacted_url(),
            flags.session_present,
        )
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            self._fail(SourceError(f"subscription to {self.subscription} refused: {reasons}"))
            return
        self.connected.set()
        self._metrics.mqtt_connected.set(1)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._in_loop(self._mark_disconnected, str(reason), getattr(reason, "value", None))

    def _mark_disconnected(self, reason: str, code: int | None) -> None:
        # A connection attempt that failed before CONNACK is reported through _ready; one the
        # broker had accepted (even if not yet subscribed: a takeover can strike then) here.
        self._disconnect_code = code
        was_up = self._session_up
        self._session_up = False
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        self._fail(SourceError(f"disconnected: {reason}"))
        if was_up or self._stopping:
            self._disconnected.set()

    def _fail(self, error: SourceError) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._stopping:
            return  # left unacked: the broker redelivers it to the next session
        # Never raise into paho: one odd message must not break the connection. Once a ticket
        # is registered, every path settles or fails it: an open ticket would hold back every
        # later ack (acks go out in order).
        ticket: int | None = None
        try:
            self._metrics.received.inc()
            payload = bytes(message.payload)
            if message.retain:
                retained = self._retained.replayed(message._topic, payload)
                if retained is None:  # a state we already know
                    self.tracker.settle(self.tracker.received(message.mid, message.qos))
                    return
            else:
                retained = self._retained.live(message._topic, payload)
            ticket = self.tracker.received(message.mid, message.qos)
            self._take_in(message, payload, ticket, retained)
        except Exception:
            log.exception("failed to take in a message on %r", message._topic[:100])
            if ticket is not None:
                self._give_up(ticket)

    def _take_in(
        self,
        message: paho.MQTTMessage,
        payload: bytes,
        ticket: int,
        retained: RetainedKey | None,
    ) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")  # invalid UTF-8
        size = len(payload)
        if self._max_payload is not None and size > self._max_payload:
            # Will be dead-lettered as too large: keep only what the dead letter stores, so the
            # whole payload is freed when paho drops the packet, not when the record is written.
            raw = RawMessage(topic, payload[: self._oversize_keep], time.time(), ticket, size)
        else:
            raw = RawMessage(topic, payload, time.time(), ticket)
        held = len(raw.payload) + len(topic)
        self._held[ticket] = held
        self._held_bytes += held
        if retained is not None:
            self._retained.track(ticket, retained)
        try:
            self._inbox.put_nowait(raw)
        except asyncio.QueueFull:
            self._overflow.append(raw)
            self._overflow_ready.set()
        self._update_reading()

    def _give_up(self, ticket: int) -> None:
        """A message we failed to take in: unacked (redelivered on the next connection), but
        out of the line, so later acks go out."""
        self._metrics.intake_errors.inc()
        self._held_bytes -= self._held.pop(ticket, 0)
        self._retained.forget(ticket)
        self.tracker.fail(ticket)

    def _on_unsubscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        barrier = self._barrier
        if barrier is not None and barrier[0] == mid and not barrier[1].done():
            barrier[1].set_result(None)

    def _send_ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    def _settle_acks(self, tickets: Iterable[int]) -> None:
        self.tracker.settle_many(tickets)  # looked up each time: a bench swaps the tracker
        if not self._reading:
            self._update_reading()  # acks made room below the receive maximum

    def settle(self, tickets: Iterable[int]) -> None:
        """Messages are safe: ack them (in arrival order, retained ones once the ledger has
        them), and read on if that made room (bytes held, messages unacked)."""
        if not isinstance(tickets, list):
            tickets = list(tickets)
        held = self._held
        freed = 0
        for ticket in tickets:
            freed += held.pop(ticket, 0)
        self._held_bytes -= freed
        self._retained.settle(tickets)
        if not self._reading:
            self._update_reading()

    def _may_read(self) -> bool:
        """Whether to read the socket: not paused, no overflow, below both in-flight bounds."""
        return (
            not self._paused
            and not self._overflow
            and self._held_bytes <= self._settings.max_inflight_bytes
            and self.tracker.in_flight < self._settings.receive_maximum
        )

    # -- tasks ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect with jittered backoff whenever the connection drops."""
        await self._retained.load()
        while not self._stopping:
            await self._connect_with_retry()
            await self._disconnected.wait()
            dropped = self.tracker.reset()
            if self._stopping:
                return
            self._metrics.reconnects.inc()
            wait = self._guard.lost(self._disconnect_code)
            if self._guard.strikes:
                # A client-id fight or a flapping connection: explained once by the guard.
                log.debug("connection lost again; reconnecting in %.1f s", wait)
                await asyncio.sleep(wait)
                continue
            log.warning(
                "lost connection to %s; %d unacked messages will be redelivered",
                self._settings.redacted_url(),
                dropped,
            )

    async def run_retained(self) -> None:
        """Record handled retained messages durably before their acks (must run alongside
        ``run``: the acks of retained messages wait for it)."""
        await self._retained.run()

    async def _connect_with_retry(self) -> None:
        s = self._settings
        retrying = AsyncRetrying(
            stop=stop_never,
            wait=wait_random_exponential(multiplier=s.reconnect_min_s, max=s.reconnect_max_s),
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                await self.connect_once()

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("cannot connect to %s: %s", self._settings.redacted_url(), error)

    async def connect_once(self) -> None:
        """One connection attempt: connect, subscribe; raise ``SourceError`` on failure."""
        s = self._settings
        self._disconnected.clear()
        self._session_up = False
        self._ready = self._loop.create_future()
        kwargs: dict[str, Any] = {}
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.receive_maximum
            kwargs = {"clean_start": False, "properties": props}
        try:
            await asyncio.to_thread(self._client.connect, s.host, s.port, s.keepalive_s, **kwargs)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._ready
        except (OSError, ssl.SSLError, TimeoutError, SourceError) as exc:
            if self._disconnected.is_set() and not self._stopping:
                return  # accepted, then dropped before subscribing: run() decides the wait
            self._client.disconnect()  # closes a half-open attempt; harmless otherwise
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{s.redacted_url()}: {exc!r}") from exc

    async def run_misc(self) -> None:
        """paho's housekeeping (keepalive pings, retries) once a second."""
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._fd is not None:
                self._client.loop_misc()

    async def run_pump(self) -> None:
        """Move messages that found the inbox full into it as room appears, then read again."""
        while True:
            await self._overflow_ready.wait()
            self._overflow_ready.clear()
            while self._overflow:
                # Left in the overflow until it is in: reading stays off until the last is in.
                await self._inbox.put(self._overflow[0])
                self._overflow.popleft()
            self._update_reading()

    def pause(self) -> None:
        """Stop taking messages (shutdown); acks still go out."""
        self._paused = True
        self._set_reading(False)

    async def disconnect(self) -> None:
        """Leave cleanly once the broker has our acks; it keeps our session (and the rest).

        Closing a socket that still holds unread bytes makes the kernel reset the connection,
        and the broker then drops the acks it had not read yet (a SIGTERM under load lost 499
        of 500 that way: all redelivered). So we read on, ignoring new messages (unacked, the
        broker redelivers them), and first unsubscribe from a filter we never subscribed to:
        the broker handles a connection's packets in order, so its answer means every ack we
        sent before has arrived.
        """
        self._stopping = True
        if self._fd is None:
            self._disconnected.set()
            return
        self._set_reading(True)
        await self._acks_arrived()
        self._client.disconnect()
        try:
            async with asyncio.timeout(5):
                await self._disconnected.wait()
        except TimeoutError:
            log.warning("broker did not close the connection in time")

    async def _acks_arrived(self) -> None:
        """Wait (bounded) for the answer to the barrier UNSUBSCRIBE sent after our acks."""
        answered: asyncio.Future[None] = self._loop.create_future()
        result, mid = self._client.unsubscribe(BARRIER_FILTER)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # no connection left to wait on
        self._barrier = (mid, answered)
        try:
            async with asyncio.timeout(BARRIER_TIMEOUT_S):
                await answered
        except TimeoutError:
            log.warning("broker did not confirm our acks in time; it may redeliver some")
        finally:
            self._barrier = None
