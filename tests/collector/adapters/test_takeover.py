"""TakeoverGuard: how long to wait after a lost connection, and when to explain a client-id fight.

The fight itself, against a real Mosquitto, is in test_mqtt.py; these pin the decisions, with a
fake clock, including the MQTT 5 reason code 0x8E that Mosquitto 2.0.11 does not send.
"""

from __future__ import annotations

import logging

import pytest

from collector.adapters.takeover import SESSION_TAKEN_OVER, TakeoverGuard
from collector.metrics import Metrics
from parkwatch.settings import MqttSettings

UNSPECIFIED = 0x80


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_guard(clock: Clock, metrics: Metrics | None = None) -> TakeoverGuard:
    """A guard with a 0.2 s first step and a 60 s cap."""
    settings = MqttSettings(client_id="twin", reconnect_min_s=0.2, takeover_backoff_max_s=60)
    return TakeoverGuard(settings, metrics or Metrics(), clock=clock)


def drop(guard: TakeoverGuard, clock: Clock, *, after: float, code: int = UNSPECIFIED) -> float:
    """Connect, stay up ``after`` seconds, lose the connection; the wait the guard asks for."""
    guard.connected()
    clock.now += after
    wait = guard.lost(code)
    clock.now += wait
    return wait


def test_a_drop_after_a_long_connection_reconnects_at_once() -> None:
    clock = Clock()
    guard = make_guard(clock)
    assert drop(guard, clock, after=3600) == 0.0
    assert guard.strikes == 0


def test_session_taken_over_backs_off_growing_to_the_cap_and_is_explained_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, metrics = Clock(), Metrics()
    guard = make_guard(clock, metrics)
    with caplog.at_level(logging.WARNING):
        # Kicked out after a long, stable connection: a takeover all the same.
        waits = [drop(guard, clock, after=3600, code=SESSION_TAKEN_OVER)]
        waits += [drop(guard, clock, after=30, code=SESSION_TAKEN_OVER) for _ in range(12)]
    steps = [min(60.0, 0.2 * 2**n) for n in range(13)]
    assert all(step / 2 <= wait <= step for wait, step in zip(waits, steps, strict=True))
    assert waits[-1] >= 30  # at the cap
    assert metrics.session_takeovers._value.get() == 13
    assert len(caplog.records) == 1
    assert "client id 'twin'" in caplog.records[0].getMessage()
    assert "another instance uses the same client id" in caplog.records[0].getMessage()
    assert "mqtt.partition" in caplog.records[0].getMessage()


def test_quick_drops_without_a_reason_are_suspected_from_the_third_and_all_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, metrics = Clock(), Metrics()
    guard = make_guard(clock, metrics)
    with caplog.at_level(logging.WARNING):
        first_two = [drop(guard, clock, after=0.01) for _ in range(2)]
        assert all(wait > 0 for wait in first_two)  # backed off, but not explained yet
        assert not caplog.records
        assert metrics.session_takeovers._value.get() == 0
        drop(guard, clock, after=0.01)
    assert metrics.session_takeovers._value.get() == 3
    assert len(caplog.records) == 1
    assert "client id 'twin' 3 times in a row" in caplog.records[0].getMessage()


def test_the_episode_ends_once_a_connection_outlasts_twice_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    guard = make_guard(clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            drop(guard, clock, after=0.01)
        # Up for 100 s, less than 2 x 60: still the same fight, still backing off.
        assert drop(guard, clock, after=100) > 0
        assert guard.strikes == 5
        # Up for 121 s: the other instance is gone; a later drop is an ordinary one.
        assert drop(guard, clock, after=121) == 0.0
        assert guard.strikes == 0
        for _ in range(3):
            drop(guard, clock, after=0.01)
    assert len(caplog.records) == 2  # one explanation per episode
