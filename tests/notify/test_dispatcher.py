"""The notification core with fake receivers: grouping, de-duplication, routing to several
receivers, retries only for retryable failures, bounded outboxes, drain, re-sends, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from notify.dispatcher import Dispatcher
from parkwatch.errors import ConfigError, NotifyRejected, NotifyUnavailable
from parkwatch.events import AlertState, AlertTransition
from tests.helpers import until
from tests.notify.helpers import FakeNotifier, alert, names, resolved, running, settings, transition


def dispatcher_with(
    registry: CollectorRegistry,
    fakes: list[FakeNotifier],
    route: dict[str, object] | None = None,
    **receiver: object,
) -> Dispatcher:
    """A dispatcher whose receivers (webhook settings, test timings) are the given fakes."""
    receivers = {f.name: {"type": "webhook", "url": "http://x.invalid", **receiver} for f in fakes}
    notifiers = {f.name: f for f in fakes}
    return Dispatcher(settings(receivers, route), registry, notifiers=notifiers)


async def test_transitions_that_happen_together_become_one_message(
    registry: CollectorRegistry,
) -> None:
    chat = FakeNotifier("chat")
    async with running(dispatcher_with(registry, [chat])) as dispatcher:
        for device in ("bess-1", "bess-2", "bess-3"):
            dispatcher.submit(transition(alert(device=device)))
        dispatcher.submit(transition(alert("ChargerFaulted", kind="charger", device="cp-1")))
        await until(lambda: len(chat.alerts()) == 4, what="4 alerts delivered")
    # group_by park, alertname: the three cells in one message, the charger in another.
    assert sorted(names(chat.sent)) == [
        ["ChargerFaulted"],
        ["StorageCellHot", "StorageCellHot", "StorageCellHot"],
    ]
    assert all(n.first_seen is not None for n in chat.sent)


async def test_an_alert_that_fires_and_resolves_within_group_wait_is_sent_once_resolved(
    registry: CollectorRegistry,
) -> None:
    chat = FakeNotifier("chat")
    firing = alert()
    async with running(dispatcher_with(registry, [chat])) as dispatcher:
        dispatcher.submit(transition(firing))
        dispatcher.submit(transition(resolved(firing)))
        await until(lambda: bool(chat.sent), what="a message")
    assert chat.alerts() == [("StorageCellHot/bess-1", "resolved")]


async def test_pending_and_inactive_transitions_are_not_notified(
    registry: CollectorRegistry,
) -> None:
    chat = FakeNotifier("chat")
    async with running(dispatcher_with(registry, [chat])) as dispatcher:
        pending = alert(state=AlertState.PENDING)
        dispatcher.submit(AlertTransition(pending, AlertState.INACTIVE, at_ms=1))
        inactive = alert(state=AlertState.INACTIVE)
        dispatcher.submit(AlertTransition(inactive, AlertState.PENDING, at_ms=2))
        dispatcher.submit(transition(alert(device="bess-9")))
        await until(lambda: bool(chat.sent), what="the firing alert")
        await dispatcher.drain(5)
    assert chat.alerts() == [("StorageCellHot/bess-9", "firing")]


async def test_a_transition_submitted_twice_is_notified_once(registry: CollectorRegistry) -> None:
    chat = FakeNotifier("chat")
    firing = alert()
    async with running(dispatcher_with(registry, [chat])) as dispatcher:
        dispatcher.submit(transition(firing))
        await until(lambda: bool(chat.sent), what="first message")
        dispatcher.submit(transition(firing))  # e.g. replayed after a restart
        dispatcher.submit(transition(resolved(firing)))
        dispatcher.submit(transition(resolved(firing)))
        await until(lambda: len(chat.sent) == 2, what="the resolve")
        await dispatcher.drain(5)
    assert chat.alerts() == [
        ("StorageCellHot/bess-1", "firing"),
        ("StorageCellHot/bess-1", "resolved"),
    ]
    duplicates = registry.get_sample_value(
        "parkwatch_notification_duplicates_total", {"receiver": "chat"}
    )
    assert duplicates == 2


async def test_routes_with_continue_reach_several_receivers(registry: CollectorRegistry) -> None:
    fakes = [FakeNotifier("everything"), FakeNotifier("critical"), FakeNotifier("lingang")]
    routes = {
        "receivers": [],
        "group_wait_s": 0.01,
        "routes": [
            {"receivers": ["everything"], "continue": True},
            {"match": {"severity": "critical"}, "receivers": ["critical"], "continue": True},
            {"match_re": {"park": "lin.*"}, "receivers": ["lingang"]},
        ],
    }
    receivers = {f.name: {"type": "webhook", "url": "http://x.invalid"} for f in fakes}
    dispatcher = Dispatcher(
        settings(receivers, routes), registry, notifiers={f.name: f for f in fakes}
    )
    async with running(dispatcher):
        dispatcher.submit(transition(alert(park="lingang", severity="critical")))
        dispatcher.submit(transition(alert(park="caohejing", severity="warning")))
        await until(lambda: all(f.sent for f in fakes))
        await dispatcher.drain(5)
    everything, critical, lingang = fakes
    assert len(everything.alerts()) == 2
    assert [a.labels["park"] for n in critical.sent for a in n.alerts] == ["lingang"]
    assert [a.labels["park"] for n in lingang.sent for a in n.alerts] == ["lingang"]


async def test_send_resolved_false_keeps_resolves_from_a_receiver(
    registry: CollectorRegistry,
) -> None:
    chat = FakeNotifier("chat")
    firing = alert()
    async with running(dispatcher_with(registry, [chat], send_resolved=False)) as dispatcher:
        dispatcher.submit(transition(firing))
        await until(lambda: bool(chat.sent))
        dispatcher.submit(transition(resolved(firing)))
        await dispatcher.drain(5)
    assert chat.alerts() == [("StorageCellHot/bess-1", "firing")]


async def test_retryable_failures_are_retried_until_delivered(registry: CollectorRegistry) -> None:
    flaky = FakeNotifier(
        "flaky",
        failures=[NotifyUnavailable("HTTP 500"), NotifyUnavailable("HTTP 503", retry_after=0.01)],
    )
    async with running(dispatcher_with(registry, [flaky])) as dispatcher:
        dispatcher.submit(transition(alert()))
        await until(lambda: bool(flaky.sent), what="delivery after two failures")
    assert flaky.calls == 3
    sample = registry.get_sample_value
    assert sample("parkwatch_notification_retries_total", {"receiver": "flaky"}) == 2
    assert sample("parkwatch_notifications_total", {"receiver": "flaky", "outcome": "sent"}) == 1
    assert sample("parkwatch_notification_latency_seconds_count", {"receiver": "flaky"}) == 1


async def test_a_rejected_message_is_not_retried(registry: CollectorRegistry) -> None:
    picky = FakeNotifier("picky", failures=[NotifyRejected("HTTP 400: bad body")])
    async with running(dispatcher_with(registry, [picky])) as dispatcher:
        dispatcher.submit(transition(alert()))
        metric = ("parkwatch_notifications_total", {"receiver": "picky", "outcome": "failed"})
        await until(lambda: registry.get_sample_value(*metric) == 1, what="failed counted")
    assert picky.calls == 1
    assert (
        registry.get_sample_value("parkwatch_notification_retries_total", {"receiver": "picky"})
        == 0
    )


async def test_retries_end_at_the_deadline(registry: CollectorRegistry) -> None:
    down = FakeNotifier("down", failures=[NotifyUnavailable("HTTP 502")] * 1000)
    dispatcher = dispatcher_with(registry, [down], retry_deadline_s=0.3)
    async with running(dispatcher):
        dispatcher.submit(transition(alert()))
        metric = ("parkwatch_notifications_total", {"receiver": "down", "outcome": "failed"})
        await until(lambda: registry.get_sample_value(*metric) == 1, what="given up")
    assert down.calls >= 2
    assert not down.sent


async def test_a_hanging_receiver_holds_up_neither_submit_nor_the_other_receiver(
    registry: CollectorRegistry, record_property: Callable[[str, object], None]
) -> None:
    gate = asyncio.Event()  # while clear, every send of `hung` hangs
    hung = FakeNotifier("hung", gate=gate)
    healthy = FakeNotifier("healthy")
    receivers = {
        "hung": {"type": "webhook", "url": "http://x.invalid", "queue_size": 3},
        "healthy": {"type": "webhook", "url": "http://x.invalid", "queue_size": 1000},
    }
    route = {"receivers": ["hung", "healthy"], "group_wait_s": 0}
    dispatcher = Dispatcher(
        settings(receivers, route, attempt_timeout_s=600),
        registry,
        notifiers={"hung": hung, "healthy": healthy},
    )
    count = 40
    dropped = ("parkwatch_notifications_total", {"receiver": "hung", "outcome": "dropped"})
    async with running(dispatcher):
        # For comparison: a burst while every receiver answers at once.
        gate.set()
        started = time.perf_counter()
        for n in range(count):
            dispatcher.submit(transition(alert(f"Before{n}")))
        without_s = time.perf_counter() - started
        await dispatcher.drain(10)
        assert len(healthy.sent) == count
        hung.sent.clear()
        dropped_before = registry.get_sample_value(*dropped) or 0  # its 3-slot queue overflowed
        # Now `hung` hangs mid-send, and the same burst comes.
        gate.clear()
        hung.arrived.clear()
        dispatcher.submit(transition(alert("First")))
        await until(hung.arrived.is_set, what="the hung receiver to be mid-send")
        started = time.perf_counter()
        for n in range(count):
            dispatcher.submit(transition(alert(f"Alert{n}")))  # returns while `hung` hangs
        with_hung_s = time.perf_counter() - started
        await until(lambda: len(healthy.sent) == 2 * count + 1, what="every message to healthy")
        # One message in flight, three waiting; the 37 others pushed out, oldest first.
        assert registry.get_sample_value(*dropped) == dropped_before + count - 3
        assert hung.sent == []
        gate.set()
        await dispatcher.drain(10)
        assert [n.alerts[0].name for n in hung.sent] == ["First", "Alert37", "Alert38", "Alert39"]
    healthy_dropped = {"receiver": "healthy", "outcome": "dropped"}
    assert registry.get_sample_value("parkwatch_notifications_total", healthy_dropped) == 0
    record_property("submits_per_s_while_a_receiver_hangs", round(count / with_hung_s))
    record_property("submits_per_s_without", round(count / without_s))


async def test_drain_flushes_open_groups_and_waits_for_delivery(
    registry: CollectorRegistry,
) -> None:
    chat = FakeNotifier("chat")
    dispatcher = dispatcher_with(registry, [chat], {"receivers": ["chat"], "group_wait_s": 3600})
    async with running(dispatcher):
        dispatcher.submit(transition(alert()))
        await asyncio.sleep(0)
        assert not chat.sent  # an hour of group_wait left
        await dispatcher.drain(5)
        assert chat.alerts() == [("StorageCellHot/bess-1", "firing")]
    assert chat.closed


async def test_drain_returns_at_its_timeout_when_a_receiver_hangs(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    hung = FakeNotifier("hung", gate=asyncio.Event())
    dispatcher = dispatcher_with(registry, [hung], attempt_timeout_s=600)
    async with running(dispatcher):
        dispatcher.submit(transition(alert()))
        dispatcher.submit(transition(alert("Other")))
        with caplog.at_level(logging.WARNING, logger="notify.dispatcher"):
            await dispatcher.drain(0.2)
    assert "not drained" in caplog.text
    assert "'hung': 1" in caplog.text


async def test_ungrouped_receivers_get_transitions_at_once_coalesced_per_request(
    registry: CollectorRegistry,
) -> None:
    gate = asyncio.Event()
    am = FakeNotifier("am", grouped=False, gate=gate)
    receivers = {
        "am": {"type": "alertmanager", "url": "http://x.invalid", "resend_interval_s": 3600}
    }
    route = {"receivers": ["am"], "group_wait_s": 3600}  # not applied to Alertmanager
    dispatcher = Dispatcher(settings(receivers, route), registry, notifiers={"am": am})
    firing = alert()
    async with running(dispatcher):
        dispatcher.submit(transition(alert(device="first")))
        await until(am.arrived.is_set, what="the first post")
        for device in ("a", "b"):
            dispatcher.submit(transition(alert(device=device)))
        dispatcher.submit(transition(firing))
        dispatcher.submit(transition(resolved(firing)))
        gate.set()
        await until(lambda: len(am.sent) == 2, what="two posts")
    assert am.alerts() == [
        ("StorageCellHot/first", "firing"),
        ("StorageCellHot/a", "firing"),
        ("StorageCellHot/b", "firing"),
        ("StorageCellHot/bess-1", "resolved"),
    ]


async def test_alertmanager_receivers_get_firing_alerts_re_sent(
    registry: CollectorRegistry,
) -> None:
    am = FakeNotifier("am", grouped=False)
    receivers = {
        "am": {"type": "alertmanager", "url": "http://x.invalid", "resend_interval_s": 0.05}
    }
    dispatcher = Dispatcher(settings(receivers), registry, notifiers={"am": am})
    keeps, ends = alert(device="keeps"), alert(device="ends")
    async with running(dispatcher):
        dispatcher.submit(transition(keeps))
        dispatcher.submit(transition(ends))
        await until(lambda: any(n.kind == "resend" for n in am.sent), what="a re-send")
        dispatcher.submit(transition(resolved(ends)))
        seen = len(am.sent)
        await until(lambda: sum(n.kind == "resend" for n in am.sent[seen + 1 :]) >= 2)
    later = [n for n in am.sent[seen + 1 :] if n.kind == "resend"]
    assert all([a.labels["device"] for a in n.alerts] == ["keeps"] for n in later), (
        "a resolved alert is no longer re-sent"
    )


async def test_seeded_alerts_are_re_sent_but_not_notified_again(
    registry: CollectorRegistry,
) -> None:
    am = FakeNotifier("am", grouped=False)
    chat = FakeNotifier("chat")
    receivers: dict[str, dict[str, Any]] = {
        "am": {"type": "alertmanager", "url": "http://x.invalid", "resend_interval_s": 0.05},
        "chat": {"type": "webhook", "url": "http://x.invalid"},
    }
    dispatcher = Dispatcher(settings(receivers), registry, notifiers={"am": am, "chat": chat})
    still_firing = alert()
    dispatcher.seed([still_firing])
    async with running(dispatcher):
        dispatcher.submit(transition(still_firing))  # the engine re-emits it after a restart
        await until(lambda: bool(am.sent), what="the re-send")
        await dispatcher.drain(5)
    assert {n.kind for n in am.sent} == {"resend"}
    assert not chat.sent


async def test_metrics_show_every_receiver_from_the_start(registry: CollectorRegistry) -> None:
    Dispatcher(settings({"hook": {"type": "webhook", "url": "http://x.invalid"}}), registry)
    text = generate_latest(registry).decode()
    for outcome in ("sent", "failed", "dropped"):
        assert f'parkwatch_notifications_total{{outcome="{outcome}",receiver="hook"}} 0.0' in text
    assert 'parkwatch_notification_latency_seconds_count{receiver="hook"} 0.0' in text
    assert 'parkwatch_notify_queue_depth{receiver="hook"} 0.0' in text


async def test_submit_never_raises(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chat = FakeNotifier("chat")
    dispatcher = dispatcher_with(registry, [chat])

    def broken(labels: object) -> list[object]:
        raise RuntimeError("routing bug")

    monkeypatch.setattr(dispatcher._router, "routes_for", broken)
    dispatcher.submit(transition(alert()))
    assert "cannot route" in caplog.text


async def test_test_sends_one_message_and_names_unknown_receivers(
    registry: CollectorRegistry,
) -> None:
    chat = FakeNotifier("chat")
    dispatcher = dispatcher_with(registry, [chat])
    seconds = await dispatcher.test("chat")
    assert seconds >= 0
    assert [n.kind for n in chat.sent] == ["test"]
    with pytest.raises(ConfigError, match=r"no notify receiver named 'nope'.*chat"):
        await dispatcher.test("nope")
