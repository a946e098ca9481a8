"""The receiver adapters, one module each, and the factory that builds one from its settings."""

from __future__ import annotations

from notify.links import DashboardLinks
from notify.notifier import Notifier
from notify.render import Renderer
from parkwatch.settings import (
    AlertmanagerReceiverSettings,
    AppriseReceiverSettings,
    ReceiverSettings,
    WebhookReceiverSettings,
)

__all__ = ["make_notifier"]


def make_notifier(
    name: str, settings: ReceiverSettings, renderer: Renderer, links: DashboardLinks
) -> Notifier:
    """The adapter for one configured receiver (ConfigError if its settings cannot work)."""
    # Imported here: Apprise loads 100+ plugins, which only an Apprise receiver needs.
    if isinstance(settings, AlertmanagerReceiverSettings):
        from notify.receivers.alertmanager import AlertmanagerNotifier  # noqa: PLC0415

        return AlertmanagerNotifier(name, settings, links)
    if isinstance(settings, AppriseReceiverSettings):
        from notify.receivers.apprise_urls import AppriseNotifier  # noqa: PLC0415

        return AppriseNotifier(name, settings, renderer)
    if isinstance(settings, WebhookReceiverSettings):
        from notify.receivers.webhook import WebhookNotifier  # noqa: PLC0415

        return WebhookNotifier(name, settings, renderer, links)
    raise TypeError(f"unknown receiver settings {type(settings).__name__}")
