"""Broker acknowledgements, sent only once a message is safe, and in the order received.

MQTT requires PUBACKs in the order the PUBLISH packets arrived (MQTT 3.1.1 and 5.0, s4.6), but
the pipeline settles messages out of order (a dead letter is safe before a batch is written).
``AckTracker`` hands out increasing tickets and releases acks from the front of the line only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["AckTracker"]

SendAck = Callable[[int, int], None]
"""Sends the acknowledgement for (mid, qos) to the broker."""


class _Entry:
    __slots__ = ("failed", "mid", "qos", "received", "settled")

    def __init__(self, mid: int, qos: int, received: float) -> None:
        self.mid = mid
        self.qos = qos
        self.received = received
        self.settled = False
        self.failed = False


class AckTracker:
    """Tracks unacknowledged messages of the current connection and acks them in order."""

    def __init__(self, send_ack: SendAck) -> None:
        self._send_ack = send_ack
        self._next_ticket = 0
        self._pending: dict[int, _Entry] = {}
        self._order: deque[int] = deque()
        self.acked = 0
        self.failed = 0

    def received(self, mid: int, qos: int) -> int:
        """Register a message and return its ticket."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending[ticket] = _Entry(mid, qos, time.monotonic())
        self._order.append(ticket)
        return ticket

    def settle(self, ticket: int) -> None:
        """Mark a message safe; ack it and every settled message behind it at the front."""
        self.settle_many((ticket,))

    def settle_many(self, tickets: Iterable[int]) -> None:
        """Mark many messages safe at once."""
        pending = self._pending
        for ticket in tickets:
            entry = pending.get(ticket)
            # None: from a connection that has since dropped; the broker redelivers it.
            if entry is not None:
                entry.settled = True
        self._release()

    def fail(self, ticket: int) -> None:
        """Give a message up without acking it: it leaves the line, so the acks behind it go
        out, and the broker keeps it (unacked, in our session) and redelivers it on the next
        connection."""
        entry = self._pending.get(ticket)
        if entry is not None and not entry.settled:
            entry.settled = entry.failed = True
            self.failed += 1
            self._release()

    def _release(self) -> None:
        order, pending = self._order, self._pending
        while order:
            entry = pending[order[0]]
            if not entry.settled:
                return
            del pending[order.popleft()]
            if entry.qos > 0 and not entry.failed:
                self._send_ack(entry.mid, entry.qos)
                self.acked += 1

    def reset(self) -> int:
        """Forget every outstanding message (connection lost); return how many were dropped."""
        dropped = len(self._pending)
        self._pending.clear()
        self._order.clear()
        return dropped

    @property
    def in_flight(self) -> int:
        """Messages received on this connection and not yet acknowledged."""
        return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds the oldest unacknowledged message has waited (0 when none)."""
        if not self._order:
            return 0.0
        return time.monotonic() - self._pending[self._order[0]].received
