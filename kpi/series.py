"""One park's open windows of one kind (say ``15m``), and how readings are spread over them.

A series keeps a *cursor*: the start of its oldest window that is not closed yet. Windows from
the cursor on are open; each one that has received something has a :class:`WindowAcc`. What
belongs to a window before the cursor (closed) is dropped: the window has been reported.

A counter pair ``(t0, v0) -> (t1, v1)`` adds its increase to the window holding it, or, when it
spans boundaries, to each window in proportion to the time it spends there (linear interpolation
at each boundary). A pair longer than ``max_gap`` that spans a boundary gives no value to any
window it touches: they are marked unknown for that total, rather than guessed.
"""

from __future__ import annotations

from typing import Any

from kpi.counters import CHARGING, FAULTED
from kpi.windows import WindowKind

__all__ = ["Series", "WindowAcc"]


class WindowAcc:
    """What an open window has received so far."""

    __slots__ = (
        "charging_ms",
        "end",
        "faulted_ms",
        "green_kwh",
        "green_minutes",
        "known_ms",
        "peak_kw",
        "peak_quarters",
        "sums",
        "unknown",
    )

    def __init__(self, end: int) -> None:
        self.end = end
        self.sums: dict[str, float] = {}
        """Counter increases per park total (``pv_kwh``, ``ev_energy_kwh``, ...)."""
        self.unknown: set[str] = set()
        """Totals a long gap made unknown here."""
        self.charging_ms = 0
        self.faulted_ms = 0
        self.known_ms = 0
        """Connector-time in Charging, in Faulted, and with any known status."""
        self.green_kwh = 0.0
        self.green_minutes = 0
        """Sum of the closed ``1m`` windows' green EV energy, and how many minutes had one."""
        self.peak_kw = 0.0
        self.peak_quarters = 0
        """Highest closed ``15m`` peak demand within, and how many quarters had one."""

    def add(self, total: str, amount: float) -> None:
        """Add ``amount`` to ``total``."""
        sums = self.sums
        sums[total] = sums.get(total, 0.0) + amount

    def count(self, status: str, duration_ms: int) -> None:
        """Count ``duration_ms`` of connector-time in ``status``."""
        self.known_ms += duration_ms
        if status == CHARGING:
            self.charging_ms += duration_ms
        elif status == FAULTED:
            self.faulted_ms += duration_ms

    def to_json(self, start: int) -> list[Any]:
        """This accumulator as a JSON-able row."""
        return [
            start,
            self.end,
            self.sums,
            sorted(self.unknown),
            self.charging_ms,
            self.faulted_ms,
            self.known_ms,
            self.green_kwh,
            self.green_minutes,
            self.peak_kw,
            self.peak_quarters,
        ]

    @classmethod
    def from_json(cls, row: list[Any]) -> tuple[int, WindowAcc]:
        """The window start and accumulator of a ``to_json`` row."""
        start, end, sums, unknown, charging, faulted, known, green, minutes, peak, quarters = row
        acc = cls(int(end))
        acc.sums = {str(k): float(v) for k, v in sums.items()}
        acc.unknown = set(unknown)
        acc.charging_ms, acc.faulted_ms, acc.known_ms = int(charging), int(faulted), int(known)
        acc.green_kwh, acc.green_minutes = float(green), int(minutes)
        acc.peak_kw, acc.peak_quarters = float(peak), int(quarters)
        return int(start), acc


class Series:
    """The open windows of one kind for one park, from the cursor on."""

    __slots__ = ("_hot", "_hot_end", "_hot_start", "accs", "cursor", "cursor_end", "kind", "name")

    def __init__(self, kind: WindowKind, first_ts: int) -> None:
        self.kind = kind
        self.name = kind.name
        self.cursor = kind.start_of(first_ts)
        self.cursor_end = kind.end_of(self.cursor)
        self.accs: dict[int, WindowAcc] = {}
        # The open window most readings land in, so they skip the window arithmetic (a cache:
        # not part of the state).
        self._hot: WindowAcc | None = None
        self._hot_start = self._hot_end = 0

    def _warm(self, start: int, end: int) -> WindowAcc:
        acc = self.acc(start, end)
        self._hot, self._hot_start, self._hot_end = acc, start, end
        return acc

    def acc(self, start: int, end: int) -> WindowAcc:
        """The accumulator of the open window ``[start, end)``, created on first use."""
        acc = self.accs.get(start)
        if acc is None:
            acc = self.accs[start] = WindowAcc(end)
        return acc

    def acc_at(self, ts: int) -> WindowAcc | None:
        """The accumulator of the window holding ``ts``; None if that window is closed."""
        start = self.kind.start_of(ts)
        if start < self.cursor:
            return None
        return self.acc(start, self.kind.end_of(start))

    def add_pair(self, t0: int, t1: int, amounts: list[tuple[str, float]], long_gap: bool) -> None:
        """Spread the increases of a counter pair ``(t0, t1]`` over the windows it spans."""
        hot = self._hot
        if hot is not None and self._hot_start <= t0 and t1 <= self._hot_end:
            sums = hot.sums
            for total, amount in amounts:
                sums[total] = sums.get(total, 0.0) + amount
            return
        kind = self.kind
        start = kind.start_of(t0)
        end = kind.end_of(start)
        if t1 <= end:  # no boundary inside the pair: all of it belongs to one window
            if start >= self.cursor:
                acc = self._warm(start, end)
                for total, amount in amounts:
                    acc.add(total, amount)
            return
        if start < self.cursor:  # the parts in closed windows are dropped
            start, end = self.cursor, self.cursor_end
        span = t1 - t0
        while start < t1:
            acc = self.acc(start, end)
            if long_gap:
                acc.unknown.update(total for total, _ in amounts)
            else:
                share = (min(end, t1) - max(start, t0)) / span
                for total, amount in amounts:
                    acc.add(total, amount * share)
            start, end = end, kind.end_of(end)

    def add_status(self, t0: int, t1: int, status: str) -> None:
        """Count connector-time ``[t0, t1)`` in ``status`` in the open windows it overlaps."""
        hot = self._hot
        if hot is not None and self._hot_start <= t0 and t1 <= self._hot_end:
            hot.count(status, t1 - t0)
            return
        kind = self.kind
        start = kind.start_of(t0)
        start = max(start, self.cursor)
        end = kind.end_of(start)
        while start < t1:
            overlap = min(end, t1) - max(start, t0)
            if overlap > 0:
                self.acc(start, end).count(status, overlap)
            start, end = end, kind.end_of(end)

    def step(self) -> tuple[int, int, WindowAcc | None]:
        """Close the window at the cursor: return its bounds and accumulator; move on."""
        start, end = self.cursor, self.cursor_end
        acc = self.accs.pop(start, None)
        if acc is not None and acc is self._hot:
            self._hot = None
        self.cursor, self.cursor_end = end, self.kind.end_of(end)
        return start, end, acc

    def skip_to(self, start: int) -> None:
        """Move the cursor to ``start`` over windows that have nothing to report."""
        self.cursor = self.kind.start_of(start)
        self.cursor_end = self.kind.end_of(self.cursor)
        self._hot = None

    def first_acc_start(self) -> int | None:
        """Start of the earliest window with an accumulator."""
        return min(self.accs) if self.accs else None

    def to_json(self) -> dict[str, Any]:
        """The series as JSON-able data."""
        return {
            "cursor": self.cursor,
            "cursor_end": self.cursor_end,
            "accs": [acc.to_json(start) for start, acc in self.accs.items()],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Replace the state with ``to_json`` data."""
        self.cursor, self.cursor_end = int(data["cursor"]), int(data["cursor_end"])
        self.accs = dict(WindowAcc.from_json(row) for row in data["accs"])
        self._hot = None
