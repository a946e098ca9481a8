"""Each park's event-time clock, shared by the KPI and rule stages.

A park's clock is the newest ``ts`` seen from it, advancing with the wall clock while the park is
silent, so a simulation at 600x closes windows and fires alerts at simulated times, a replayed
backlog (old timestamps) lands in the windows it belongs to, and a silent park still goes stale.

Rules that keep the clock honest:

* It never goes backwards: an older ``ts`` (a late or redelivered reading) leaves it alone.
* Only event times move it: a status message without a ``ts`` of its own (a last will; its
  point is marked ``ts_from_receipt``) carries just its receive time, which would throw a
  simulated park or a replayed backlog ahead to the wall clock. The analytics stage never
  places such a point just after ``now`` instead (1 ms: the clock moves by no more).
* It advances with the wall clock only while the collector is listening (``resume``d): while the
  broker connection is down, or the process is not running, nothing is heard, so silence means
  nothing. After a restart the clock resumes from its persisted value, not from the wall clock,
  so the backlog the broker kept for us is on time rather than late.
* Only ``observe`` and ``now`` take a wall time, always passed in by the caller (never read
  here), so a replay of the same inputs with the same wall times gives the same clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["ParkClocks"]


class _Clock:
    __slots__ = ("base_ms", "base_wall")

    def __init__(self, base_ms: int, base_wall: float) -> None:
        self.base_ms = base_ms
        self.base_wall = base_wall


class ParkClocks:
    """Event-time clocks of every park heard from; ``now`` in epoch milliseconds."""

    def __init__(self) -> None:
        self._clocks: dict[str, _Clock] = {}
        self._listening_since: float | None = None

    def observe(self, park: str, ts_ms: int, wall: float) -> int:
        """A reading stamped ``ts_ms`` arrived from ``park`` at ``wall`` (epoch s); the clock."""
        clock = self._clocks.get(park)
        if clock is None:
            self._clocks[park] = _Clock(ts_ms, wall)
            return ts_ms
        current = self._at(clock, wall)
        clock.base_ms = ts_ms if ts_ms > current else current
        clock.base_wall = wall
        return clock.base_ms

    def now(self, park: str, wall: float) -> int | None:
        """The park's clock at ``wall``; None for a park never heard from."""
        clock = self._clocks.get(park)
        return None if clock is None else self._at(clock, wall)

    def _at(self, clock: _Clock, wall: float) -> int:
        if self._listening_since is None:
            return clock.base_ms
        since = max(clock.base_wall, self._listening_since)
        return clock.base_ms + max(0, round((wall - since) * 1000))

    def resume(self, wall: float) -> None:
        """The collector hears the broker again (subscribed): silence counts from ``wall``."""
        if self._listening_since is None:
            self._listening_since = wall

    def pause(self, wall: float) -> None:
        """The collector stops hearing (disconnected, stopping): every clock stops at ``wall``."""
        if self._listening_since is None:
            return
        for clock in self._clocks.values():
            clock.base_ms = self._at(clock, wall)
            clock.base_wall = wall
        self._listening_since = None

    @property
    def listening(self) -> bool:
        """Whether silence currently advances the clocks."""
        return self._listening_since is not None

    def parks(self) -> Iterator[str]:
        """Every park heard from."""
        return iter(self._clocks)

    def __len__(self) -> int:
        return len(self._clocks)

    def snapshot(self, wall: float) -> dict[str, Any]:
        """The clocks as plain data, frozen at ``wall`` (what a restart resumes from)."""
        return {park: self._at(clock, wall) for park, clock in self._clocks.items()}

    def restore(self, data: dict[str, Any], wall: float) -> None:
        """Load a ``snapshot``; the clocks stay stopped until ``resume``."""
        self._listening_since = None
        self._clocks = {park: _Clock(int(ms), wall) for park, ms in data.items()}
