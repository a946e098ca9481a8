"""Loud, not a flood: a repeated log line let through once per interval (writer, engines)."""

from __future__ import annotations

import time

__all__ = ["Throttle"]


class Throttle:
    """Lets a repeated log line through once per interval; counts the occurrences in between."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next = 0.0
        self._held_back = 0

    def due(self) -> int | None:
        """The occurrences held back since the last one let through, if this one may pass."""
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return None
        self._next = now + self._interval
        held_back, self._held_back = self._held_back, 0
        return held_back

    def restart(self) -> None:
        """A new episode begins: its first occurrence is let through at once."""
        self._next = 0.0
        self._held_back = 0
