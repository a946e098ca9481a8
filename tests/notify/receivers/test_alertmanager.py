"""The Alertmanager receiver against a real Alertmanager (Debian's prometheus-alertmanager 0.25):
firing alerts appear with their labels, resolve when told, stay active while re-sent, and the
answers map onto retryable and non-retryable errors."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from notify.dispatcher import Dispatcher
from notify.links import DashboardLinks
from notify.model import Notification
from notify.receivers.alertmanager import AlertmanagerNotifier
from parkwatch.errors import NotifyRejected, NotifyUnavailable
from parkwatch.localservers import Alertmanager, free_port
from parkwatch.settings import AlertmanagerReceiverSettings
from tests.helpers import (
    alertmanager_alerts,
    until,
    until_alertmanager_resolved,
    until_alertmanager_shows,
)
from tests.notify.helpers import FAST, alert, resolved, running, settings, transition

GRAFANA = "http://grafana.park:3000"


def am_settings(server: Alertmanager, **extra: object) -> dict[str, object]:
    """Receiver settings for the test Alertmanager."""
    return {"type": "alertmanager", "url": server.url, **extra}


def epoch_ms(text: str) -> int:
    """Alertmanager's RFC 3339 time as epoch ms."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.servers
async def test_a_firing_alert_appears_with_its_labels_and_resolves(
    alertmanager: Alertmanager,
    registry: CollectorRegistry,
    topic_prefix: str,
    record_property: Callable[[str, object], None],
) -> None:
    park = topic_prefix  # unique to this test on the shared Alertmanager
    dispatcher = Dispatcher(
        settings({"am": am_settings(alertmanager)}, grafana_url=GRAFANA), registry
    )
    firing = alert(park=park, device="bess-7", team="storage-ops")
    async with running(dispatcher):
        dispatcher.submit(transition(firing))
        shown = await until_alertmanager_shows(alertmanager, park=park)
        assert shown["labels"] == {
            "alertname": "StorageCellHot",
            "park": park,
            "kind": "storage",
            "device": "bess-7",
            "severity": "critical",
            "team": "storage-ops",
        }
        assert shown["annotations"] == {
            "summary": f"{park}/bess-7: cell 47.2 degC",
            "value": "47.2",
        }
        assert epoch_ms(shown["startsAt"]) == firing.fired_at_ms  # the event time
        assert shown["generatorURL"].startswith(f"{GRAFANA}/d/parkwatch-park?var-park={park}&")
        assert shown["status"]["state"] == "active"
        # Valid for 4 re-send intervals from now (default interval 60 s).
        assert epoch_ms(shown["endsAt"]) > time.time() * 1000 + 3 * 60_000

        dispatcher.submit(transition(resolved(firing)))
        await until_alertmanager_resolved(alertmanager, park=park)
    sample = registry.get_sample_value
    assert sample("parkwatch_notifications_total", {"receiver": "am", "outcome": "sent"}) == 2
    count = sample("parkwatch_notification_latency_seconds_count", {"receiver": "am"})
    total = sample("parkwatch_notification_latency_seconds_sum", {"receiver": "am"})
    assert count == 2
    assert total is not None
    record_property("alertmanager_latency_firing_to_delivered_ms", round(total / count * 1000, 1))


@pytest.mark.servers
async def test_re_sends_keep_a_firing_alert_active_past_its_first_end(
    alertmanager: Alertmanager, registry: CollectorRegistry, topic_prefix: str
) -> None:
    park = topic_prefix
    # Each post is valid for 4 x 0.5 s: without the re-sends the alert would end after 2 s.
    receivers = {"am": am_settings(alertmanager, resend_interval_s=0.5)}
    dispatcher = Dispatcher(settings(receivers), registry)
    async with running(dispatcher):
        dispatcher.submit(transition(alert(park=park)))
        first_end = epoch_ms((await until_alertmanager_shows(alertmanager, park=park))["endsAt"])

        async def active_past_first_end() -> bool:
            shown = await alertmanager_alerts(alertmanager, park=park)
            return time.time() * 1000 > first_end + 500 and len(shown) == 1

        await until(active_past_first_end, what="the alert still active after its first endsAt")
    sent = registry.get_sample_value(
        "parkwatch_notifications_total", {"receiver": "am", "outcome": "sent"}
    )
    assert sent is not None
    assert sent >= 3


@pytest.mark.servers
async def test_simulated_future_times_are_clamped_to_the_wall_clock(
    alertmanager: Alertmanager, registry: CollectorRegistry, topic_prefix: str
) -> None:
    park = topic_prefix
    ahead_ms = int(time.time() * 1000) + 3_600_000  # a simulated park an hour ahead
    firing = alert(park=park, fired_at_ms=ahead_ms)
    dispatcher = Dispatcher(settings({"am": am_settings(alertmanager)}), registry)
    async with running(dispatcher):
        dispatcher.submit(transition(firing))
        shown = await until_alertmanager_shows(alertmanager, park=park)
        assert epoch_ms(shown["startsAt"]) <= time.time() * 1000
        dispatcher.submit(transition(resolved(firing, after_ms=60_000)))  # still "in the future"
        await until_alertmanager_resolved(alertmanager, park=park)
    failed = {"receiver": "am", "outcome": "failed"}
    assert registry.get_sample_value("parkwatch_notifications_total", failed) == 0


@pytest.mark.servers
async def test_a_refused_alert_is_not_retryable(
    alertmanager: Alertmanager, topic_prefix: str
) -> None:
    receiver = AlertmanagerReceiverSettings.model_validate(am_settings(alertmanager, **FAST))
    notifier = AlertmanagerNotifier("am", receiver, DashboardLinks(None, "parkwatch-park"))
    good = alert(park=topic_prefix)
    # "bad-label" is not a Prometheus label name.
    bad = dataclasses.replace(good, labels={**good.labels, "bad-label": "x"})
    try:
        with pytest.raises(NotifyRejected, match=r'HTTP 400: .*invalid name \\"bad-label'):
            await notifier.send(Notification("am", (bad,)))
    finally:
        await notifier.close()


async def test_an_unreachable_alertmanager_is_retryable() -> None:
    receiver = AlertmanagerReceiverSettings(
        type="alertmanager", url=f"http://127.0.0.1:{free_port()}"
    )
    notifier = AlertmanagerNotifier("am", receiver, DashboardLinks(None, "parkwatch-park"))
    try:
        with pytest.raises(NotifyUnavailable) as caught:
            await notifier.send(Notification("am", (alert(),)))
        assert caught.value.retryable
    finally:
        await notifier.close()
