"""Alert notifications: routing, grouping and delivery of alert transitions to receivers.

Stands only on the shared contract (``parkwatch.events``, ``parkwatch.settings``,
``parkwatch.errors``); the application wires :class:`Dispatcher` into its TaskGroup.
"""

from notify.dispatcher import Dispatcher
from notify.model import Notification
from notify.notifier import Notifier

__all__ = ["Dispatcher", "Notification", "Notifier"]
