"""What the kernel says about a process and the machine: CPU seconds, memory, load (Linux /proc).

Benchmarks read these around a measured run so that a figure comes with what it cost (CPU seconds
of the collector, the broker and the database) and how busy the machine was meanwhile (other
processes on a shared machine make absolute rates meaningless; the busy fraction shows it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "MachineCpu",
    "cpu_seconds",
    "loadavg",
    "machine_cpu",
    "memory_mb",
]

_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


def memory_mb(pid: int) -> dict[str, float]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` (resident now) in MiB; empty if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key.lower()] = int(value.split()[0]) / 1024  # kB
    return found


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """Cumulative CPU time of the whole machine, in clock ticks (all cores)."""

    busy: int
    total: int

    def busy_fraction_since(self, earlier: MachineCpu) -> float:
        """Share of all cores' time spent busy between ``earlier`` and this reading."""
        total = self.total - earlier.total
        return (self.busy - earlier.busy) / total if total > 0 else 0.0


def machine_cpu() -> MachineCpu:
    """The machine's CPU counters now (``/proc/stat``)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    ticks = [int(value) for value in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return MachineCpu(busy=sum(ticks) - idle, total=sum(ticks))


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]
