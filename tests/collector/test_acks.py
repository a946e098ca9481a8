"""AckTracker: PUBACKs leave in arrival order whatever order the pipeline settles messages in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.acks import AckTracker


class SentAcks:
    """Records every (mid, qos) the tracker sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def __call__(self, mid: int, qos: int) -> None:
        self.sent.append((mid, qos))

    @property
    def mids(self) -> list[int]:
        """The message ids acked so far, in order."""
        return [mid for mid, _ in self.sent]


def test_acks_wait_for_every_earlier_message_and_then_go_out_in_arrival_order() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    tickets = [tracker.received(mid, 1) for mid in (101, 102, 103, 104)]

    tracker.settle(tickets[2])
    tracker.settle(tickets[1])
    assert acks.sent == []  # 101 is still outstanding

    tracker.settle(tickets[0])
    assert acks.sent == [(101, 1), (102, 1), (103, 1)]

    tracker.settle(tickets[3])
    assert acks.mids == [101, 102, 103, 104]
    assert tracker.acked == 4
    assert tracker.in_flight == 0


def test_settle_many_releases_the_front_in_one_go() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    tickets = [tracker.received(mid, 1) for mid in range(1, 6)]
    tracker.settle_many(reversed(tickets[:3]))
    assert acks.mids == [1, 2, 3]
    assert tracker.in_flight == 2


def test_qos2_acks_carry_their_qos() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    tracker.settle(tracker.received(9, 2))
    assert acks.sent == [(9, 2)]


def test_qos0_messages_are_settled_without_an_ack_and_do_not_block_the_line() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    first = tracker.received(0, 0)
    second = tracker.received(7, 1)
    third = tracker.received(0, 0)
    tracker.settle_many([second, third])
    assert acks.sent == []  # the QoS 0 message in front is not settled yet
    tracker.settle(first)
    assert acks.sent == [(7, 1)]
    assert tracker.acked == 1
    assert tracker.in_flight == 0


def test_settling_twice_acks_once() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    ticket = tracker.received(5, 1)
    tracker.settle(ticket)
    tracker.settle(ticket)
    assert acks.sent == [(5, 1)]


def test_tickets_are_unique_even_when_the_broker_reuses_a_mid() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    first = tracker.received(1, 1)
    tracker.settle(first)
    second = tracker.received(1, 1)  # mid 1 is free again once acked
    assert second != first
    tracker.settle(second)
    assert acks.mids == [1, 1]


def test_reset_voids_outstanding_tickets_so_settling_them_later_sends_nothing() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    old = [tracker.received(mid, 1) for mid in (1, 2, 3)]
    tracker.settle(old[1])
    assert tracker.reset() == 3
    assert tracker.in_flight == 0

    new = tracker.received(1, 1)  # after a reconnect the broker redelivers with new mids
    tracker.settle_many(old)
    assert acks.sent == []  # the old connection's acks are gone for good
    assert tracker.in_flight == 1
    tracker.settle(new)
    assert acks.sent == [(1, 1)]


def test_in_flight_counts_received_and_unacked_messages() -> None:
    tracker = AckTracker(SentAcks())
    assert tracker.in_flight == 0
    tickets = [tracker.received(mid, 1) for mid in (1, 2, 3)]
    assert tracker.in_flight == 3
    tracker.settle(tickets[1])
    assert tracker.in_flight == 3  # settled but held behind ticket 0
    tracker.settle(tickets[0])
    assert tracker.in_flight == 1


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        """The current fake time."""
        return self.now


def test_oldest_age_is_zero_when_idle_and_follows_the_oldest_unacked_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("collector.acks.time", clock)
    tracker = AckTracker(SentAcks())
    assert tracker.oldest_age() == 0.0
    first = tracker.received(1, 1)
    clock.now += 5.0
    second = tracker.received(2, 1)
    clock.now += 2.0
    assert tracker.oldest_age() == 7.0
    tracker.settle(second)
    assert tracker.oldest_age() == 7.0  # the first still waits, and it is the oldest
    tracker.settle(first)
    assert tracker.oldest_age() == 0.0


def test_oldest_age_moves_on_to_the_next_message_once_the_oldest_is_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("collector.acks.time", clock)
    tracker = AckTracker(SentAcks())
    first = tracker.received(1, 1)
    clock.now += 5.0
    tracker.received(2, 1)
    clock.now += 2.0
    tracker.settle(first)
    assert tracker.oldest_age() == 2.0


def settled_prefix(settled: set[int], count: int) -> int:
    """Length of the arrival-order prefix whose messages are all settled."""
    prefix = 0
    while prefix < count and prefix in settled:
        prefix += 1
    return prefix


@st.composite
def arrivals_and_settle_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """QoS levels of the arriving messages, and a settle order over a subset of them."""
    qos = draw(st.lists(st.sampled_from([0, 1, 1, 2]), min_size=1, max_size=40))
    settled = draw(st.lists(st.sampled_from(range(len(qos))), unique=True))
    return qos, draw(st.permutations(settled))


@given(arrivals_and_settle_order())
def test_for_any_settle_order_acks_are_the_fully_settled_arrival_prefix(
    case: tuple[list[int], list[int]],
) -> None:
    qos_levels, order = case
    acks = SentAcks()
    tracker = AckTracker(acks)
    mids = [1000 + index for index in range(len(qos_levels))]
    tickets = [tracker.received(mid, qos) for mid, qos in zip(mids, qos_levels, strict=True)]
    settled: set[int] = set()
    for index in order:
        tracker.settle(tickets[index])
        settled.add(index)
        prefix = settled_prefix(settled, len(mids))
        assert acks.sent == [(mids[i], qos_levels[i]) for i in range(prefix) if qos_levels[i] > 0]
        assert tracker.in_flight == len(mids) - prefix
        assert tracker.acked == len(acks.sent)


def test_a_failed_message_is_never_acked_and_does_not_hold_back_the_ones_behind_it() -> None:
    acks = SentAcks()
    tracker = AckTracker(acks)
    tickets = [tracker.received(mid, 1) for mid in (1, 2, 3)]
    tracker.settle_many(tickets[1:])
    assert acks.mids == []
    tracker.fail(tickets[0])  # the broker keeps message 1 and redelivers it after a reconnect
    assert acks.mids == [2, 3]
    assert (tracker.acked, tracker.failed, tracker.in_flight) == (2, 1, 0)
    tracker.fail(tickets[0])  # failing twice, or after the fact, changes nothing
    assert tracker.failed == 1
