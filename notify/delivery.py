"""One receiver's delivery lane: bounded outbox -> rate limit -> retries -> notifier.

::

    put() --> outbox [bounded; full: the OLDEST message is dropped, counted, logged]
          --> rate limit (aiolimiter; waits, never drops)
          --> attempts (timeout each) with jittered exponential backoff (tenacity), retryable
              failures only, until the receiver's retry deadline
          --> sent | failed

``put`` never blocks and never raises, so the rules stage is never held up by a receiver; the
newest news is kept when a receiver falls behind, because a later message about an alert
supersedes an earlier one. Each lane runs as its own task: a hung or failing receiver delays
nobody else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_random_exponential,
)

from notify.metrics import NotifyMetrics
from notify.model import Notification, alert_fingerprint
from notify.notifier import Notifier
from parkwatch.errors import NotifyError, NotifyUnavailable
from parkwatch.settings import ReceiverSettings

__all__ = ["MAX_COALESCED_ALERTS", "Lane"]

log = logging.getLogger(__name__)

MAX_COALESCED_ALERTS = 500
"""An ungrouped receiver (Alertmanager) gets what waits in its outbox in one request, up to this."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, NotifyError) and exc.retryable


class Lane:
    """Delivers one receiver's messages in order, one at a time."""

    def __init__(
        self,
        notifier: Notifier,
        settings: ReceiverSettings,
        metrics: NotifyMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = notifier.name
        self.notifier = notifier
        self.settings = settings
        self._metrics = metrics
        self._clock = clock
        self._outbox: deque[Notification] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        rate = settings.rate_limit_per_minute
        self._limiter = AsyncLimiter(rate, 60.0) if rate > 0 else None
        self._backoff = wait_random_exponential(
            multiplier=settings.retry_initial_s, max=settings.retry_max_s
        )

    def __len__(self) -> int:
        return len(self._outbox)

    def put(self, notification: Notification) -> None:
        """Queue a message; when the outbox is full, drop the oldest (counted and logged)."""
        if len(self._outbox) >= self.settings.queue_size:
            dropped = self._outbox.popleft()
            self._metrics.count(self.name, "dropped")
            log.warning(
                "notify %s: queue full (%d), dropped the oldest message: %s",
                self.name,
                self.settings.queue_size,
                ", ".join(sorted({a.name for a in dropped.alerts})),
            )
        self._outbox.append(notification)
        self._idle.clear()
        self._ready.set()

    def has_resend_waiting(self) -> bool:
        """Whether a periodic re-send is still queued (so another one would add nothing)."""
        return any(n.kind == "resend" for n in self._outbox)

    async def wait_idle(self) -> None:
        """Return once the outbox is empty and nothing is being delivered."""
        await self._idle.wait()

    async def run(self) -> None:
        """Deliver messages until cancelled; never raises for a failed message."""
        while True:
            while not self._outbox:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
            notification = self._take()
            try:
                await self._deliver(notification)
            except Exception:
                # A bug in an adapter must not end this receiver's lane.
                log.exception("notify %s: unexpected error; message counted failed", self.name)
                self._metrics.count(self.name, "failed")

    def _take(self) -> Notification:
        first = self._outbox.popleft()
        if self.notifier.grouped:
            return first
        # Alertmanager takes many alerts per request: send what waits together, newest state
        # of each alert winning.
        alerts = {alert_fingerprint(a): a for a in first.alerts}
        seen = [first.first_seen] if first.first_seen is not None else []
        while self._outbox and len(alerts) < MAX_COALESCED_ALERTS:
            later = self._outbox.popleft()
            alerts.update((alert_fingerprint(a), a) for a in later.alerts)
            if later.first_seen is not None:
                seen.append(later.first_seen)
        return Notification(
            receiver=first.receiver,
            alerts=tuple(alerts.values()),
            first_seen=min(seen) if seen else None,
            kind="alerts" if seen else first.kind,
        )

    async def _deliver(self, notification: Notification) -> None:
        if self._limiter is not None:
            await self._limiter.acquire()
        try:
            await self.attempts(notification)
        except NotifyError as exc:
            self._metrics.count(self.name, "failed")
            log.error(  # noqa: TRY400 - the error says what failed; no traceback needed
                "notify %s: giving up on a message (%s, %d alerts): %s",
                self.name,
                "retryable, deadline passed" if exc.retryable else "not retryable",
                len(notification.alerts),
                exc,
            )
            return
        self._metrics.count(self.name, "sent")
        if notification.first_seen is not None:
            latency = self._clock() - notification.first_seen
            self._metrics.latency.labels(self.name).observe(latency)

    async def attempts(self, notification: Notification) -> None:
        """Try until delivered, retrying retryable failures with backoff until the deadline."""
        s = self.settings
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_before_delay(s.retry_deadline_s),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.attempt(notification)

    async def attempt(self, notification: Notification) -> None:
        """One attempt within the receiver's attempt timeout."""
        try:
            async with asyncio.timeout(self.settings.attempt_timeout_s):
                await self.notifier.send(notification)
        except TimeoutError as exc:
            raise NotifyUnavailable(
                f"{self.name}: no answer within {self.settings.attempt_timeout_s:g} s",
                receiver=self.name,
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        """Jittered exponential backoff, but at least what the receiver asked for (Retry-After)."""
        wait = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.settings.retry_max_s))
        return float(wait)

    def _before_sleep(self, state: RetryCallState) -> None:
        self._metrics.retries.labels(self.name).inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "notify %s: attempt %d failed, retrying in %.1f s: %s",
            self.name,
            state.attempt_number,
            state.upcoming_sleep,
            exc,
        )
