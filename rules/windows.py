"""Sliding event-time windows over one field of one series, with O(1) aggregates.

A window keeps the samples of the last ``span_ms`` (``(newest - span, newest]``), at most
:data:`MAX_SAMPLES` of them (the oldest go first, counted), and maintains its aggregates as
samples enter and leave: a running sum (average, sum, count), the increase between consecutive
samples (``rate``, with counter resets handled like Prometheus' ``increase``), and monotonic
deques for min and max when a rule asks for them. So reading an aggregate costs O(1) and adding a
sample O(1) amortised, whatever the window's length.

Running float sums drift; they are recomputed exactly (``math.fsum``) every
:data:`RESUM_EVERY` removals. The snapshot keeps the running sums as they are, so a restored
window continues bit for bit as the original would have (replay after a crash must match).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

__all__ = ["MAX_SAMPLES", "Window"]

MAX_SAMPLES: Final = 20_000
"""Samples one window holds at most: a 1-day window of a reading every ~5 s."""
RESUM_EVERY: Final = 4096


class Window:
    """The samples of one field of one series over the last ``span_ms``; see the module."""

    __slots__ = ("evicted", "inc", "maxs", "mins", "removed", "samples", "span_ms", "total")

    def __init__(self, span_ms: int, *, extremes: bool) -> None:
        self.span_ms = span_ms
        self.samples: deque[tuple[int, float, float]] = deque()  # (ts, value, increase)
        self.total = 0.0
        self.inc = 0.0
        self.removed = 0
        self.evicted = 0
        """Samples pushed out by the count bound (not by time)."""
        # Monotonic deques of (ts, value): only kept when a rule reads min or max.
        self.mins: deque[tuple[int, float]] | None = deque() if extremes else None
        self.maxs: deque[tuple[int, float]] | None = deque() if extremes else None

    def add(self, ts: int, value: float) -> None:
        """Add a sample newer than every sample held, and drop what falls out."""
        samples = self.samples
        if samples:
            previous = samples[-1][1]
            increase = value - previous if value >= previous else value  # a counter reset
        else:
            increase = 0.0
        samples.append((ts, value, increase))
        self.total += value
        self.inc += increase
        mins, maxs = self.mins, self.maxs
        if mins is not None and maxs is not None:
            while mins and mins[-1][1] >= value:
                mins.pop()
            mins.append((ts, value))
            while maxs and maxs[-1][1] <= value:
                maxs.pop()
            maxs.append((ts, value))
        cutoff = ts - self.span_ms
        while samples[0][0] <= cutoff:
            self._drop()
        while len(samples) > MAX_SAMPLES:
            self.evicted += 1
            self._drop()

    def _drop(self) -> None:
        ts, value, increase = self.samples.popleft()
        self.total -= value
        self.inc -= increase
        mins, maxs = self.mins, self.maxs
        if mins is not None and maxs is not None:
            if mins[0][0] <= ts:
                mins.popleft()
            if maxs[0][0] <= ts:
                maxs.popleft()
        self.removed += 1
        if self.removed % RESUM_EVERY == 0 or not self.samples:
            self.total = math.fsum(s[1] for s in self.samples)
            self.inc = math.fsum(s[2] for s in self.samples)

    # -- aggregates (None when the window cannot answer) ---------------------------------

    def avg(self) -> float | None:
        """Mean of the samples."""
        n = len(self.samples)
        return self.total / n if n else None

    def sum(self) -> float | None:
        """Sum of the samples."""
        return self.total if self.samples else None

    def count(self) -> float | None:
        """Number of samples."""
        return float(len(self.samples))

    def min(self) -> float | None:
        """Smallest sample."""
        return self.mins[0][1] if self.mins else None

    def max(self) -> float | None:
        """Largest sample."""
        return self.maxs[0][1] if self.maxs else None

    def last(self) -> float | None:
        """Newest sample."""
        return self.samples[-1][1] if self.samples else None

    def delta(self) -> float | None:
        """Newest minus oldest sample (a gauge's change); needs two samples."""
        samples = self.samples
        return samples[-1][1] - samples[0][1] if len(samples) > 1 else None

    def rate(self) -> float | None:
        """Per-second increase of a counter between the oldest and newest sample (resets ok)."""
        samples = self.samples
        if len(samples) < 2:
            return None
        seconds = (samples[-1][0] - samples[0][0]) / 1000
        # The oldest sample's increase is from a sample already outside the window.
        return (self.inc - samples[0][2]) / seconds

    # -- persistence --------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """JSON-able state (running sums as they are, so a restore continues exactly)."""
        return {
            "samples": [list(sample) for sample in self.samples],
            "total": self.total,
            "inc": self.inc,
            "removed": self.removed,
            "evicted": self.evicted,
        }

    @classmethod
    def load(cls, span_ms: int, data: dict[str, Any], *, extremes: bool) -> Window:
        """A window from ``dump`` output."""
        window = cls(span_ms, extremes=extremes)
        window.samples = deque((int(t), float(v), float(i)) for t, v, i in data["samples"])
        window.total = float(data["total"])
        window.inc = float(data["inc"])
        window.removed = int(data["removed"])
        window.evicted = int(data["evicted"])
        mins, maxs = window.mins, window.maxs
        if mins is not None and maxs is not None:
            # The monotonic deques are a function of the samples held: rebuild them.
            for ts, value, _ in window.samples:
                while mins and mins[-1][1] >= value:
                    mins.pop()
                mins.append((ts, value))
                while maxs and maxs[-1][1] <= value:
                    maxs.pop()
                maxs.append((ts, value))
        return window


WINDOW_METHODS: Final = {
    "avg_over_time": Window.avg,
    "min_over_time": Window.min,
    "max_over_time": Window.max,
    "sum_over_time": Window.sum,
    "count_over_time": Window.count,
    "last_over_time": Window.last,
    "delta": Window.delta,
    "rate": Window.rate,
}
