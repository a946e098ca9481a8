"""Spreading counter pairs and connector-time over one series' open windows."""

from __future__ import annotations

import pytest

from kpi.series import Series, WindowAcc
from kpi.windows import FixedWindows

M = 60_000


def minutes(first_ts: int = 0) -> Series:
    return Series(FixedWindows("1m", M), first_ts)


def sums(series: Series, total: str = "e") -> dict[int, float]:
    return {start // M: acc.sums[total] for start, acc in series.accs.items() if total in acc.sums}


def test_a_pair_inside_one_window_goes_there_whole() -> None:
    series = minutes()
    series.add_pair(10_000, 60_000, [("e", 7.0)], long_gap=False)  # ends on the boundary
    assert sums(series) == {0: 7.0}


def test_a_pair_is_split_in_proportion_to_time() -> None:
    """30 kWh from 0:45 to 2:15: 15 s, 60 s and 15 s of 90 s -> 5, 20, 5."""
    series = minutes()
    series.add_pair(45_000, 135_000, [("e", 30.0), ("f", 9.0)], long_gap=False)
    assert sums(series) == pytest.approx({0: 5.0, 1: 20.0, 2: 5.0})
    assert sums(series, "f") == pytest.approx({0: 1.5, 1: 6.0, 2: 1.5})


def test_parts_in_closed_windows_are_dropped() -> None:
    series = minutes()
    series.step()  # minute 0 closed
    series.add_pair(45_000, 135_000, [("e", 30.0)], long_gap=False)
    assert sums(series) == pytest.approx({1: 20.0, 2: 5.0})


def test_a_long_gap_across_a_boundary_marks_every_window_it_touches_unknown() -> None:
    series = minutes()
    series.add_pair(30_000, 150_000, [("e", 99.0)], long_gap=True)
    assert sums(series) == {}
    assert {start // M: acc.unknown for start, acc in series.accs.items()} == {
        0: {"e"},
        1: {"e"},
        2: {"e"},
    }
    series.add_pair(150_000, 170_000, [("e", 1.0)], long_gap=True)  # inside one window: exact
    assert sums(series) == {2: 1.0}


def test_connector_time_is_counted_per_status() -> None:
    series = minutes()
    series.add_status(30_000, 100_000, "Charging")
    series.add_status(100_000, 130_000, "Faulted")
    series.add_status(130_000, 150_000, "Available")
    accs = {start // M: acc for start, acc in series.accs.items()}
    assert (accs[0].charging_ms, accs[0].faulted_ms, accs[0].known_ms) == (30_000, 0, 30_000)
    assert (accs[1].charging_ms, accs[1].faulted_ms, accs[1].known_ms) == (40_000, 20_000, 60_000)
    assert (accs[2].charging_ms, accs[2].faulted_ms, accs[2].known_ms) == (0, 10_000, 30_000)


def test_step_closes_in_order_and_skip_jumps() -> None:
    series = minutes(125_000)
    assert (series.cursor, series.cursor_end) == (120_000, 180_000)
    series.add_pair(125_000, 130_000, [("e", 1.0)], long_gap=False)
    start, end, acc = series.step()
    assert (start, end) == (120_000, 180_000)
    assert acc is not None
    assert acc.sums == {"e": 1.0}
    series.skip_to(10 * M + 5)
    assert (series.cursor, series.cursor_end) == (10 * M, 11 * M)


def test_accumulators_round_trip_through_json() -> None:
    series = minutes()
    series.add_pair(45_000, 135_000, [("e", 30.0)], long_gap=False)
    series.add_pair(135_000, 290_000, [("e", 1.0)], long_gap=True)
    series.add_status(0, 90_000, "Faulted")
    series.accs[0].green_kwh, series.accs[0].green_minutes = 1.25, 1
    twin = minutes()
    twin.load(series.to_json())
    assert twin.to_json() == series.to_json()
    assert isinstance(twin.accs[0], WindowAcc)
