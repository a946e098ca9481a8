"""Park event-time clocks: newest ts, advancing with the wall clock only while listening."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parkwatch.clock import ParkClocks


def test_a_park_clock_is_the_newest_ts_and_never_goes_back() -> None:
    clocks = ParkClocks()
    assert clocks.now("p", 100.0) is None
    assert clocks.observe("p", 5_000, 100.0) == 5_000
    assert clocks.observe("p", 4_000, 100.0) == 5_000  # a late reading leaves it alone
    assert clocks.observe("p", 9_000, 100.0) == 9_000
    assert clocks.now("q", 100.0) is None  # parks are independent


def test_silence_advances_the_clock_with_the_wall_clock_only_while_listening() -> None:
    clocks = ParkClocks()
    clocks.observe("p", 60_000, 100.0)
    assert clocks.now("p", 130.0) == 60_000  # not listening yet: silence means nothing
    clocks.resume(110.0)
    assert clocks.now("p", 130.0) == 80_000  # 20 s of listening since 110
    clocks.pause(140.0)
    assert clocks.now("p", 1_000.0) == 90_000  # stopped at the pause
    clocks.resume(2_000.0)
    assert clocks.now("p", 2_005.0) == 95_000  # the 1 860 s deaf spell did not count


def test_a_reading_older_than_the_advanced_clock_does_not_pull_it_back() -> None:
    clocks = ParkClocks()
    clocks.resume(0.0)
    clocks.observe("p", 1_000, 0.0)
    assert clocks.now("p", 10.0) == 11_000
    assert clocks.observe("p", 5_000, 10.0) == 11_000
    assert clocks.observe("p", 20_000, 10.0) == 20_000
    assert clocks.now("p", 11.0) == 21_000


def test_a_restored_clock_resumes_from_its_snapshot_not_from_the_wall_clock() -> None:
    clocks = ParkClocks()
    clocks.resume(0.0)
    clocks.observe("p", 1_000, 0.0)
    data = clocks.snapshot(2.0)
    assert data == {"p": 3_000}
    restored = ParkClocks()
    restored.restore(data, 500.0)
    assert not restored.listening
    assert restored.now("p", 900.0) == 3_000
    restored.resume(900.0)
    assert restored.now("p", 901.0) == 4_000


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["observe", "pause", "resume"]),
            st.integers(0, 10**9),
            st.floats(0, 100, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_the_clock_is_monotonic_under_any_sequence(
    steps: list[tuple[str, int, float]],
) -> None:
    clocks = ParkClocks()
    wall = 0.0
    last = -1
    for action, ts, dt in steps:
        wall += dt
        if action == "observe":
            clocks.observe("p", ts, wall)
        elif action == "pause":
            clocks.pause(wall)
        else:
            clocks.resume(wall)
        now = clocks.now("p", wall)
        if now is not None:
            assert now >= last
            last = now
