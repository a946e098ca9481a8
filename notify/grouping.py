"""Grouping and de-duplication: transitions that happen together become one message.

A group is one receiver x one routing node x the values of the node's ``group_by`` labels. The
first transition of a group opens a batch that stays open for the node's ``group_wait``; every
transition of the group arriving meanwhile joins it (an alert that changes state again replaces
its earlier state), and then the batch becomes one :class:`~notify.model.Notification`.
Alertmanager's ``group_wait``, without its ``group_interval``/``repeat_interval``: a chat robot is
told each change once, and Alertmanager itself does the rest for those who run it.

:class:`SentLog` remembers what each receiver was already given, so a transition delivered twice
(a replay after a restart, two routes to one receiver) is notified once.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from notify.model import Notification, alert_fingerprint
from notify.routing import Route
from parkwatch.events import Alert

__all__ = ["Grouper", "SentLog"]

SENT_LOG_SIZE = 100_000
"""Transitions remembered per receiver for de-duplication (oldest forgotten first)."""

GroupKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class _Batch:
    receiver: str
    group_labels: dict[str, str]
    first_seen: float
    deadline: float
    alerts: dict[str, Alert] = field(default_factory=dict)


class Grouper:
    """Open batches by group, each flushed to ``emit`` once its ``group_wait`` has passed."""

    def __init__(self, emit: Callable[[Notification], None]) -> None:
        self._emit = emit
        self._batches: dict[GroupKey, _Batch] = {}
        # (deadline, sequence, key); an entry whose batch is gone or newer is stale.
        self._deadlines: list[tuple[float, int, GroupKey]] = []
        self._sequence = 0
        self._opened: dict[GroupKey, int] = {}

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, receiver: str, route: Route, alert: Alert, now: float) -> None:
        """Put ``alert`` into its group's batch, opening one that closes at ``now + group_wait``."""
        labels = route.group_labels(alert.labels)
        key: GroupKey = (receiver, route.path, tuple(sorted(labels.items())))
        batch = self._batches.get(key)
        if batch is None:
            batch = _Batch(receiver, labels, first_seen=now, deadline=now + route.group_wait_s)
            self._batches[key] = batch
            self._sequence += 1
            self._opened[key] = self._sequence
            heapq.heappush(self._deadlines, (batch.deadline, self._sequence, key))
        batch.alerts[alert_fingerprint(alert)] = alert

    def next_deadline(self) -> float | None:
        """When the earliest open batch is due, or None when none is open."""
        while self._deadlines:
            deadline, sequence, key = self._deadlines[0]
            if self._opened.get(key) == sequence:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def flush_due(self, now: float) -> int:
        """Emit every batch whose deadline has passed; return how many."""
        flushed = 0
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, key = heapq.heappop(self._deadlines)
            self._flush(key)
            flushed += 1
        return flushed

    def flush_all(self) -> int:
        """Emit every open batch now (at shutdown); return how many."""
        keys = list(self._batches)
        for key in keys:
            self._flush(key)
        self._deadlines.clear()
        return len(keys)

    def _flush(self, key: GroupKey) -> None:
        batch = self._batches.pop(key)
        self._opened.pop(key, None)
        alerts = tuple(sorted(batch.alerts.values(), key=_order))
        self._emit(
            Notification(
                receiver=batch.receiver,
                alerts=alerts,
                group_labels=batch.group_labels,
                first_seen=batch.first_seen,
            )
        )


def _order(alert: Alert) -> tuple[int, int, str]:
    """Firing before resolved, then oldest first: the order a reader wants."""
    state_rank = 0 if alert.state == "firing" else 1
    return (state_rank, alert.fired_at_ms or alert.active_at_ms, alert_fingerprint(alert))


class SentLog:
    """A bounded memory of the transitions one receiver was given."""

    def __init__(self, size: int = SENT_LOG_SIZE) -> None:
        self._size = size
        self._seen: OrderedDict[Hashable, None] = OrderedDict()

    def first_time(self, key: Hashable) -> bool:
        """Record ``key``; return False when it was recorded before."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True
