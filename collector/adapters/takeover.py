"""Two clients with one client id: notice the fight, back off, and say so once.

An MQTT broker keeps one session per client id: when a second client connects with our id, it
takes the session over and the broker drops us. MQTT 5 has a DISCONNECT reason code for it (0x8E
"Session taken over"), but brokers need not send it (Mosquitto 2.0.11 just closes the socket, as
for MQTT 3.1.1). Reconnecting at once takes the session back: two collectors with one id kicked
each other out about 300 times a second each, received every message 20-40 times and logged a
warning per reconnect. ``TakeoverGuard`` turns such drops into a growing, jittered wait, logs one
explanation per episode and counts the takeovers.

An episode starts with a 0x8E, or with a connection lost within ``QUICK_DROP_S`` of being
accepted; after ``QUICK_DROPS_SUSPECTED`` such drops in a row a takeover is assumed (counted, and
explained once). It ends once a connection has lasted twice the longest backoff: longer than the
other client waits, so the other client has gone.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Final

from collector.metrics import Metrics
from parkwatch.settings import MqttSettings

__all__ = ["SESSION_TAKEN_OVER", "TakeoverGuard"]

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER: Final = 0x8E
"""MQTT 5 DISCONNECT reason code: another connection with the same client id took the session."""
QUICK_DROP_S: Final = 5.0
QUICK_DROPS_SUSPECTED: Final = 3


class TakeoverGuard:
    """Tracks how connections end; says how long to wait before the next one."""

    def __init__(
        self,
        settings: MqttSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._connected_at: float | None = None
        self._strikes = 0  # drops in the current episode
        self._explained = False

    @property
    def strikes(self) -> int:
        """Takeovers or quick drops since the connection was last stable."""
        return self._strikes

    def connected(self) -> None:
        """A connection is up (subscribed)."""
        self._connected_at = self._clock()

    def lost(self, reason_code: int | None) -> float:
        """A connection is gone: the seconds to wait before reconnecting (0: at once)."""
        s = self._settings
        now = self._clock()
        lasted = now - (self._connected_at if self._connected_at is not None else now)
        self._connected_at = None
        if lasted >= 2 * s.takeover_backoff_max_s:
            self._strikes = 0  # long stable: whatever fought us has gone
            self._explained = False
        taken_over = reason_code == SESSION_TAKEN_OVER
        if not (taken_over or lasted < QUICK_DROP_S or self._strikes):
            return 0.0
        self._strikes += 1
        if taken_over or self._strikes >= QUICK_DROPS_SUSPECTED:
            if self._explained:
                self._metrics.session_takeovers.inc()
            else:
                # The quick drops that led to the suspicion were takeovers too.
                self._metrics.session_takeovers.inc(1 if taken_over else self._strikes)
                self._explained = True
                self._explain(taken_over)
        # Equal jitter: half the step fixed, so the wait really grows; half random, so two
        # collectors drift apart instead of colliding in step.
        step = min(s.takeover_backoff_max_s, s.reconnect_min_s * 2 ** (self._strikes - 1))
        return random.uniform(step / 2, step)  # noqa: S311 - jitter, not cryptography

    def _explain(self, taken_over: bool) -> None:
        s = self._settings
        if taken_over:
            what = (
                "another connection took over the session of client id %r (MQTT 5 reason "
                "'Session taken over'): another instance uses the same client id"
            )
            args: tuple[object, ...] = (s.client_id,)
        else:
            what = (
                "the broker dropped client id %r %d times in a row within %.0f s of accepting "
                "it, without a reason: most likely another instance uses the same client id"
            )
            args = (s.client_id, self._strikes, QUICK_DROP_S)
        log.error(
            what + ". Each collector needs its own mqtt.client_id (split the load between them "
            "with mqtt.parks / mqtt.partition); for a rolling deploy, stop the old instance before "
            "the new one starts. Backing off up to %.0f s between connections; further "
            "takeovers are counted in parkwatch_mqtt_session_takeovers_total, not logged again.",
            *args,
            s.takeover_backoff_max_s,
        )
