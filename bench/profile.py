"""A py-spy profile of a running collector, summarised as the top functions by own time.

py-spy samples another process from outside (no code change, no tracing overhead): it is
attached to ``parkwatch run`` once that is healthy, so the samples cover the drain, not the
imports at startup, and stopped with SIGINT when the drain is done. Only samples of the thread
holding the GIL are kept (``--gil``): a thread waiting (the event loop in ``epoll``, an idle
``to_thread`` worker on its queue) holds no GIL, and py-spy's own idle detection misses the
latter. So ``active_share`` (samples / (rate x seconds)) is the share of the drain the collector
spent running Python: well below 1 means it waited for the broker or the database, which is what
explains a scale-out ratio on a machine they share.

Two tables: ``top_own`` (the leaf of each sample: what the optimisation attacks) and
``top_inclusive`` (parkwatch's own functions with everything they call: which stage costs what).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

__all__ = ["PySpy", "py_spy_path", "summarise_collapsed"]

SAMPLE_RATE_HZ: Final = 200
PROJECT_PACKAGES: Final = ("parkwatch/", "collector/", "kpi/", "rules/", "notify/")
ENTRY_FILES: Final = ("parkwatch/cli.py", "parkwatch/__main__.py")
"""In every sample: left out of ``top_inclusive``, where they would say nothing."""
STOP_TIMEOUT_S: Final = 30.0
TOP: Final = 15


def py_spy_path() -> str | None:
    """The py-spy executable (beside this interpreter, or on PATH), or None if not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _split_frame(frame: str) -> tuple[str, str]:
    """``"decode (collector/decode.py)"`` -> ``("decode", "collector/decode.py")``."""
    function, _, rest = frame.partition(" (")
    return function, rest.rstrip(")")


def summarise_collapsed(text: str, *, top: int = TOP) -> dict[str, Any]:
    """Top functions by own samples (the leaf of a stack) and by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):  # recursion must not count a sample twice
            inclusive[frame] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        out = []
        for frame, samples in counter.most_common(top):
            function, file = _split_frame(frame)
            share = round(100 * samples / total, 1) if total else 0.0
            out.append({"function": function, "file": file, "samples": samples, "pct": share})
        return out

    project = Counter(
        {
            frame: samples
            for frame, samples in inclusive.items()
            if _split_frame(frame)[1].startswith(PROJECT_PACKAGES)
            and not _split_frame(frame)[1].startswith(ENTRY_FILES)
        }
    )
    return {"samples": total, "top_own": rows(own), "top_inclusive": rows(project)}


class PySpy:
    """``py-spy record`` attached to one process, writing collapsed stacks to ``output``."""

    def __init__(self, executable: str, output: Path, *, rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.executable = executable
        self.output = output
        self.rate_hz = rate_hz
        self._process: subprocess.Popen[bytes] | None = None
        self._log = output.with_suffix(".log")
        self._attached_at = 0.0
        self.seconds = 0.0
        """How long it sampled."""

    def attach(self, pid: int) -> None:
        """Start sampling ``pid``."""
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.executable, "record", "--pid", str(pid), "--format", "raw", "--nolineno",
                    "--gil", "--rate", str(self.rate_hz), "--output", str(self.output),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._attached_at = time.perf_counter()

    def finish(self) -> None:
        """Stop sampling (SIGINT makes py-spy write its output) and wait for the file."""
        process, self._process = self._process, None
        if process is None:
            return
        self.seconds = time.perf_counter() - self._attached_at
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def summary(self) -> dict[str, Any]:
        """The top functions, and how busy the process was while sampled."""
        try:
            text = self.output.read_text()
        except OSError:
            log = self._log.read_text(errors="replace")[-1000:] if self._log.exists() else ""
            return {"error": f"py-spy wrote no profile: {log}"}
        summary = summarise_collapsed(text)
        expected = self.rate_hz * self.seconds
        summary["seconds"] = round(self.seconds, 2)
        summary["active_share"] = round(summary["samples"] / expected, 3) if expected else 0.0
        return summary
