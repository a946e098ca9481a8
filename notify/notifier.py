"""The seam between the notification core and the outside systems it talks to.

Each receiver kind (``notify/receivers/``) implements :class:`Notifier`; the core (routing,
grouping, queues, retries) only ever calls these two methods. A fake of this protocol serves
the core's unit tests; every real adapter is tested against a real server.
"""

from __future__ import annotations

from typing import Protocol

from notify.model import Notification

__all__ = ["Notifier"]


class Notifier(Protocol):
    """Delivers notifications to one receiver.

    ``send`` raises :class:`~parkwatch.errors.NotifyUnavailable` for what may succeed later
    (timeouts, connection errors, 5xx, 429) and :class:`~parkwatch.errors.NotifyRejected` for
    what cannot; the caller retries only the first kind. ``grouped`` is False for a receiver
    that groups by itself (Alertmanager): it is given every transition at once.
    """

    name: str
    grouped: bool

    async def send(self, notification: Notification) -> None:
        """Deliver one message (one attempt; the caller owns timeouts and retries)."""

    async def close(self) -> None:
        """Release connections and threads."""
