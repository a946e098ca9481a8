"""What the notification stage passes between its parts: one :class:`Notification` per message.

Plain frozen, slotted objects; pydantic appears only where a body leaves parkwatch (webhook).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from parkwatch.events import Alert, AlertState

__all__ = [
    "TEST_ALERTNAME",
    "Notification",
    "NotificationKind",
    "alert_fingerprint",
    "common_labels",
    "make_test_alert",
]

NotificationKind = Literal["alerts", "resend", "test"]

TEST_ALERTNAME = "ParkwatchTest"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one receiver: the alerts of one group, each in its latest state.

    ``first_seen`` is the monotonic time at which the earliest transition in it was submitted
    (for the firing -> delivered latency); re-sends and test messages have none.
    """

    receiver: str
    alerts: tuple[Alert, ...]
    group_labels: Mapping[str, str] = field(default_factory=dict)
    first_seen: float | None = None
    kind: NotificationKind = "alerts"

    @property
    def firing(self) -> tuple[Alert, ...]:
        """The alerts that are firing."""
        return tuple(a for a in self.alerts if a.state is AlertState.FIRING)

    @property
    def resolved(self) -> tuple[Alert, ...]:
        """The alerts that are resolved."""
        return tuple(a for a in self.alerts if a.state is AlertState.RESOLVED)

    @property
    def status(self) -> Literal["firing", "resolved"]:
        """``firing`` while any alert in it fires, as in Alertmanager's webhook."""
        return "firing" if self.firing else "resolved"


def alert_fingerprint(alert: Alert) -> str:
    """The alert's fingerprint, or a stable hash of its labels when the engine gave none."""
    if alert.fingerprint:
        return alert.fingerprint
    text = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(alert.labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def common_labels(alerts: tuple[Alert, ...]) -> dict[str, str]:
    """The labels every alert has with the same value."""
    if not alerts:
        return {}
    common = dict(alerts[0].labels)
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
    return common


def make_test_alert(now_ms: int, receiver: str) -> Alert:
    """A firing alert that says it is a test, for ``parkwatch notify test``."""
    labels = {
        "alertname": TEST_ALERTNAME,
        "severity": "warning",
        "park": "parkwatch-test",
        "receiver": receiver,
    }
    annotations = {
        "summary": f"parkwatch test notification for receiver {receiver}",
        "description": "Sent by `parkwatch notify test`; no action needed.",
    }
    return Alert(
        labels=labels,
        annotations=annotations,
        state=AlertState.FIRING,
        value=None,
        active_at_ms=now_ms,
        fired_at_ms=now_ms,
        fingerprint=f"test-{receiver}",
    )
