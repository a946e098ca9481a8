"""Groups close at their own deadline, keep each alert's latest state, and the de-dup log
forgets the oldest entries first."""

from __future__ import annotations

from notify.grouping import Grouper, SentLog
from notify.model import Notification
from notify.routing import Router
from parkwatch.settings import RouteSettings
from tests.notify.helpers import alert, resolved


def test_each_group_flushes_at_its_own_deadline() -> None:
    out: list[Notification] = []
    grouper = Grouper(out.append)
    route = Router(RouteSettings(group_wait_s=10)).root
    grouper.add("chat", route, alert(device="a"), now=100.0)
    grouper.add("chat", route, alert("Other", device="b"), now=105.0)
    grouper.add("chat", route, alert(device="c"), now=109.0)  # joins the first group
    assert grouper.next_deadline() == 110.0
    assert grouper.flush_due(109.9) == 0
    assert grouper.flush_due(110.0) == 1
    assert [[a.labels["device"] for a in n.alerts] for n in out] == [["a", "c"]]
    assert out[0].first_seen == 100.0
    assert out[0].group_labels == {"park": "caohejing", "alertname": "StorageCellHot"}
    assert grouper.next_deadline() == 115.0
    # A new transition after the flush opens a new batch with a new deadline.
    grouper.add("chat", route, alert(device="d"), now=111.0)
    assert grouper.flush_due(116.0) == 1
    assert grouper.next_deadline() == 121.0
    assert grouper.flush_all() == 1
    assert grouper.next_deadline() is None
    assert len(grouper) == 0


def test_a_batch_holds_the_latest_state_firing_first() -> None:
    out: list[Notification] = []
    grouper = Grouper(out.append)
    route = Router(RouteSettings(group_wait_s=1)).root
    first = alert(device="a")
    grouper.add("chat", route, first, now=0)
    grouper.add("chat", route, alert(device="b"), now=0)
    grouper.add("chat", route, resolved(first), now=0)
    grouper.flush_all()
    assert [(a.labels["device"], a.state.value) for a in out[0].alerts] == [
        ("b", "firing"),
        ("a", "resolved"),
    ]


def test_receivers_have_separate_groups() -> None:
    out: list[Notification] = []
    grouper = Grouper(out.append)
    route = Router(RouteSettings(group_wait_s=1)).root
    grouper.add("one", route, alert(), now=0)
    grouper.add("two", route, alert(), now=0)
    grouper.flush_all()
    assert sorted(n.receiver for n in out) == ["one", "two"]


def test_the_sent_log_is_bounded_and_forgets_the_oldest() -> None:
    log = SentLog(size=2)
    assert log.first_time("a")
    assert log.first_time("b")
    assert not log.first_time("a")  # seen again: now the most recent
    assert log.first_time("c")  # evicts b, the least recently seen
    assert not log.first_time("a")
    assert log.first_time("b")
