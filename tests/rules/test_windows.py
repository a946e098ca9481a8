"""Sliding windows: O(1) aggregates equal brute force over the samples in the window."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import windows as windows_module
from rules.windows import Window

SPANS = st.sampled_from([1_000, 10_000, 60_000])
STEPS = st.lists(
    st.tuples(st.integers(1, 20_000), st.floats(0, 1000, allow_nan=False)), min_size=1, max_size=60
)


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=300, deadline=None)
@given(SPANS, STEPS)
def test_aggregates_equal_brute_force(span: int, steps: list[tuple[int, float]]) -> None:
    window = Window(span, extremes=True)
    ts = 0
    held: list[tuple[int, float]] = []
    for dt, value in steps:
        ts += dt
        window.add(ts, value)
        held = [(t, v) for t, v in [*held, (ts, value)] if t > ts - span]
        values = [v for _, v in held]
        assert window.count() == len(values)
        assert close(window.sum(), math.fsum(values))
        assert close(window.avg(), math.fsum(values) / len(values))
        assert window.min() == min(values)
        assert window.max() == max(values)
        assert window.last() == values[-1]
        assert close(window.delta(), values[-1] - values[0] if len(values) > 1 else None)


@settings(max_examples=200, deadline=None)
@given(SPANS, STEPS)
def test_rate_counts_resets_like_increase(span: int, steps: list[tuple[int, float]]) -> None:
    window = Window(span, extremes=False)
    ts = 0
    every: list[tuple[int, float]] = []
    for dt, value in steps:
        ts += dt
        window.add(ts, value)
        every.append((ts, value))
    held = [(t, v) for t, v in every if t > ts - span]
    if len(held) < 2:
        assert window.rate() is None
        return
    increase = 0.0
    for (_, before), (_, after) in itertools.pairwise(held):
        increase += after - before if after >= before else after
    seconds = (held[-1][0] - held[0][0]) / 1000
    assert close(window.rate(), increase / seconds)


def test_rate_over_a_counter_reset() -> None:
    window = Window(60_000, extremes=False)
    for ts, value in [(0, 100.0), (10_000, 110.0), (20_000, 5.0), (30_000, 15.0)]:
        window.add(ts, value)
    # increases: 10, then a reset (5 counts as 5), then 10 = 25 over 30 s
    assert window.rate() == pytest.approx(25 / 30)


def test_the_sample_bound_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows_module, "MAX_SAMPLES", 5)
    window = Window(10**9, extremes=True)
    for i in range(12):
        window.add(i, float(i))
    assert window.count() == 5
    assert window.min() == 7
    assert window.evicted == 7


@settings(max_examples=100, deadline=None)
@given(SPANS, STEPS, STEPS)
def test_a_restored_window_continues_bit_for_bit(
    span: int, first: list[tuple[int, float]], second: list[tuple[int, float]]
) -> None:
    original = Window(span, extremes=True)
    ts = 0
    for dt, value in first:
        ts += dt
        original.add(ts, value)
    restored = Window.load(span, original.dump(), extremes=True)
    for dt, value in second:
        ts += dt
        original.add(ts, value)
        restored.add(ts, value)
    assert restored.dump() == original.dump()
    assert (restored.avg(), restored.min(), restored.max(), restored.rate()) == (
        original.avg(),
        original.min(),
        original.max(),
        original.rate(),
    )
