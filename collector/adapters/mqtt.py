"""MQTT ingest: subscribe, feed the pipeline's inbox, and ack only what the pipeline settles.

The connection itself is one of two clients (``mqtt.client``): ``native``, the default
(``collector/adapters/mqttconn.py``, an asyncio Protocol over ``mqttwire.py`` and
``mqttparser.py`` that hands over each socket read's messages in one call and writes a batch of
acks at once), or ``paho`` (``collector/adapters/mqttpaho.py``, paho-mqtt 2.x with
``manual_ack``). Why a client of our own: ``mqttwire.py``'s docstring. Everything else is here,
the same for both: acks in arrival order and only once a message is safe
(``collector/acks.py``), the reconnect loop, flow control, retained messages, take-over
back-off, the ack barrier at shutdown.

Flow control: the broker may have ``receive_maximum`` unacked messages in flight to us (MQTT 5).
We stop taking messages (and reading the socket) when the pipeline's inbox is full, when
``receive_maximum`` messages are unacked (brokers do not all keep to the number once acks flow:
Mosquitto 2.0.11 sent 47 unacked for 20, and MQTT 3.1.1 cannot announce it), and when the
payload bytes received and not yet settled exceed ``max_inflight_bytes``. TCP back-pressure then
keeps further messages at the broker, which holds them in our persistent session. Nothing is
dropped here. A payload over the decoder's limit (it will be dead-lettered as too large) is cut
to the part a dead letter keeps as soon as it arrives, so a backlog of huge payloads costs
memory for one at a time.

Retained messages (RETAIN flag: sent again on every subscription) are state, not events: one
already handled is acked and skipped (``collector/retained.py``). Two collectors fighting over one
client id back off (``collector/adapters/takeover.py``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Iterable
from typing import Final, Protocol

from tenacity import AsyncRetrying, RetryCallState, stop_never, wait_random_exponential

from collector.acks import AckTracker
from collector.adapters.mqttconn import MqttConnection
from collector.adapters.mqttparser import ConnAck, Publish
from collector.adapters.mqttwire import reason_name
from collector.adapters.takeover import TakeoverGuard
from collector.messages import RawMessage
from collector.metrics import Metrics
from collector.retained import RetainedFilter, RetainedKey, RetainedLedger
from parkwatch.errors import SourceError
from parkwatch.settings import MqttSettings

__all__ = ["Link", "MqttSource"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0
MISC_INTERVAL_S: Final = 1.0
BARRIER_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 5.0
BARRIER_FILTER: Final = "$parkwatch/ack-barrier"
"""Unsubscribed from at shutdown, never subscribed to: its UNSUBACK shows our acks arrived."""
UNLIMITED: Final = (1 << 30, 1 << 62)


class Link(Protocol):
    """One connection to the broker, as both clients provide it."""

    @property
    def is_open(self) -> bool:
        """Whether the connection is up (until the receiver hears it was lost)."""

    async def open(self) -> ConnAck:
        """Connect and await CONNACK; ``SourceError`` if refused."""

    async def subscribe(self, filters: list[str]) -> list[int]:
        """SUBSCRIBE at QoS 1; a reason code per filter."""

    async def unsubscribe(self, filters: list[str]) -> None:
        """UNSUBSCRIBE and await UNSUBACK."""

    def set_reading(self, on: bool) -> None:
        """Read the socket or not."""

    def ack(self, packet_id: int, qos: int) -> None:
        """Send the PUBACK (or PUBREC) of a message."""

    def disconnect(self, reason_code: int = 0) -> None:
        """Send DISCONNECT; the broker then closes the connection."""

    def abort(self) -> None:
        """Give the connection up at once, without reporting it lost."""

    def keep_alive(self) -> None:
        """Housekeeping, about once a second: keepalive pings."""


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
        self._buffered = buffered  # paho only: BufferedClient or stock paho (bench.ingest)
        self._link: Link | None = None
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
        self._reading = False  # whether the current link reads its socket
        self._paused = False
        self._disconnected = asyncio.Event()
        self.connected = connected or asyncio.Event()
        self._stopping = False
        metrics.unacked.set_function(lambda: self.tracker.in_flight)
        metrics.oldest_unacked.set_function(self.tracker.oldest_age)
        metrics.inflight_bytes.set_function(lambda: self._held_bytes)

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

    def _new_link(self) -> Link:
        if self._settings.client == "paho":
            # Imported here: paho-mqtt is only loaded when it is the client (~15 ms of startup).
            from collector.adapters.mqttpaho import PahoConnection  # noqa: PLC0415

            return PahoConnection(self._settings, self, buffered=self._buffered)
        return MqttConnection(
            self._settings, self, payload_limit=self._max_payload, keep=self._oversize_keep
        )

    # -- what the link delivers (collector.adapters.mqttconn.Receiver) --------------------------

    def budget(self) -> tuple[int, int]:
        """Messages and payload bytes we may take in now; (0, -1) when we may not read."""
        if self._stopping:
            return UNLIMITED  # read on, ignoring messages: see disconnect()
        if not self._may_read():
            return 0, -1
        count = self._settings.receive_maximum - self.tracker.in_flight
        inbox = self._inbox
        if inbox.maxsize > 0:
            # One more than fits goes to the overflow, which stops the reading until the pump
            # has moved it in (the pump is what notices the room).
            count = min(count, inbox.maxsize - inbox.qsize() + 1)
        return count, self._settings.max_inflight_bytes - self._held_bytes

    def take_in(self, publishes: list[Publish]) -> None:
        """Messages as they arrived: each gets a ticket and goes into the inbox."""
        if self._stopping:
            return  # left unacked: the broker redelivers them to the next session
        self._metrics.received.inc(len(publishes))
        now = time.time()
        tracker, retained_filter = self.tracker, self._retained
        for publish in publishes:
            topic, payload, packet_id, qos, retain, _ = publish
            # Never raise into the link: one odd message must not break the connection. Once a
            # ticket is registered, every path settles or fails it: an open ticket would hold
            # back every later ack (acks go out in order).
            ticket: int | None = None
            try:
                if retain:
                    retained = retained_filter.replayed(topic, payload)
                    if retained is None:  # a state we already know
                        tracker.settle(tracker.received(packet_id, qos))
                        continue
                else:
                    retained = retained_filter.live(topic, payload)
                ticket = tracker.received(packet_id, qos)
                self._enqueue(publish, now, ticket, retained)
            except Exception:
                log.exception("failed to take in a message on %r", topic[:100])
                if ticket is not None:
                    self._give_up(ticket)
        self._update_reading()

    def _enqueue(
        self, publish: Publish, now: float, ticket: int, retained: RetainedKey | None
    ) -> None:
        topic, payload, _, _, _, size = publish
        try:
            text = topic.decode()
        except UnicodeDecodeError:
            text = topic.decode("utf-8", "replace")  # invalid UTF-8: the decoder refuses it
        if self._max_payload is not None and size > self._max_payload:
            # Will be dead-lettered as too large: keep only what the dead letter stores (the
            # native client cut it already while parsing).
            raw = RawMessage(text, payload[: self._oversize_keep], now, ticket, size)
        else:
            raw = RawMessage(text, payload, now, ticket)
        held = len(raw.payload) + len(text)
        self._held[ticket] = held
        self._held_bytes += held
        if retained is not None:
            self._retained.track(ticket, retained)
        try:
            self._inbox.put_nowait(raw)
        except asyncio.QueueFull:
            self._overflow.append(raw)
            self._overflow_ready.set()

    def lost(self, reason: str, code: int | None) -> None:
        """The connection is gone (``code``: the broker's DISCONNECT reason, if it sent one)."""
        # A connection attempt that failed before CONNACK is reported by connect_once; one the
        # broker had accepted (even if not yet subscribed: a takeover can strike then) here.
        self._disconnect_code = code
        was_up = self._session_up
        self._session_up = False
        self._reading = False
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        log.debug("disconnected: %s", reason)
        if was_up or self._stopping:
            self._disconnected.set()

    def _give_up(self, ticket: int) -> None:
        """A message we failed to take in: unacked (redelivered on the next connection), but
        out of the line, so later acks go out."""
        self._metrics.intake_errors.inc()
        self._held_bytes -= self._held.pop(ticket, 0)
        self._retained.forget(ticket)
        self.tracker.fail(ticket)

    # -- acks and flow control -------------------------------------------------------------

    def _send_ack(self, mid: int, qos: int) -> None:
        if self._link is not None:
            self._link.ack(mid, qos)

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
        self._retained.settle(tickets)  # -> _settle_acks, which reads on if there is room now

    def _may_read(self) -> bool:
        """Whether to read the socket: not paused, no overflow, below both in-flight bounds."""
        return (
            not self._paused
            and not self._overflow
            and self._held_bytes <= self._settings.max_inflight_bytes
            and self.tracker.in_flight < self._settings.receive_maximum
        )

    def _update_reading(self) -> None:
        """Read the socket if ``_may_read``, else stop: the broker keeps what we do not read."""
        self._set_reading(self._may_read())

    def _set_reading(self, on: bool) -> None:
        link = self._link
        if link is None or on == self._reading:
            return
        self._reading = on
        link.set_reading(on)

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
        link = self._link = self._new_link()
        self._reading = True  # a new connection reads: its CONNACK at least
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                connack = await link.open()
                self._accepted(connack)
                self._update_reading()
                self._check_granted(await link.subscribe(self.subscriptions))
        except (OSError, ssl.SSLError, TimeoutError, SourceError) as exc:
            if self._disconnected.is_set() and not self._stopping:
                return  # accepted, then dropped before subscribing: run() decides the wait
            link.abort()
            self._session_up = False
            if isinstance(exc, SourceError):
                raise
            raise SourceError(f"{s.redacted_url()}: {exc!r}") from exc
        self.connected.set()
        self._metrics.mqtt_connected.set(1)

    def _check_granted(self, codes: list[int]) -> None:
        if any(code >= 0x80 for code in codes):  # failure codes start there
            names = ", ".join(reason_name(code) for code in codes)
            raise SourceError(f"subscription to {self.subscription} refused: {names}")

    def _accepted(self, connack: ConnAck) -> None:
        self._session_up = True
        self._guard.connected()
        log.log(
            logging.DEBUG if self._guard.strikes else logging.INFO,  # quiet while flapping
            "connected to %s (session present: %s)",
            self._settings.redacted_url(),
            connack.session_present,
        )

    async def run_misc(self) -> None:
        """Housekeeping (keepalive pings) once a second."""
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            link = self._link
            if link is not None and link.is_open:
                link.keep_alive()

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
        link = self._link
        if link is None or not link.is_open:
            self._disconnected.set()
            return
        self._set_reading(True)
        await self._acks_arrived(link)
        link.disconnect()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._disconnected.wait()
        except TimeoutError:
            log.warning("broker did not close the connection in time")
            link.abort()
            self.lost("closed by us after the broker did not", None)

    async def _acks_arrived(self, link: Link) -> None:
        """Wait (bounded) for the answer to the barrier UNSUBSCRIBE sent after our acks."""
        try:
            async with asyncio.timeout(BARRIER_TIMEOUT_S):
                await link.unsubscribe([BARRIER_FILTER])
        except SourceError:
            return  # no connection left to wait on
        except TimeoutError:
            log.warning("broker did not confirm our acks in time; it may redeliver some")
