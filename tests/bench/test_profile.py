"""``bench.profile``: the collapsed-stack summary, and py-spy attached to a real busy process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.profile import PySpy, py_spy_path, summarise_collapsed

COLLAPSED = """\
main (app.py);loop (app.py);decode (collector/decode.py);loads (json.py) 6
main (app.py);loop (app.py);decode (collector/decode.py) 2
main (app.py);loop (app.py);write (collector/writer.py) 1
main (app.py);loop (app.py);loop (app.py);decode (collector/decode.py) 1
not a sample line
"""

SPIN = """
import time
def busy_spin_for_the_profiler():
    end = time.monotonic() + 30
    while time.monotonic() < end:
        pass
print("spinning", flush=True)
busy_spin_for_the_profiler()
"""


def test_own_and_inclusive_samples() -> None:
    summary = summarise_collapsed(COLLAPSED)

    assert summary["samples"] == 10
    own = {(row["function"], row["file"]): row["samples"] for row in summary["top_own"]}
    assert own == {
        ("loads", "json.py"): 6,
        ("decode", "collector/decode.py"): 3,
        ("write", "collector/writer.py"): 1,
    }
    assert summary["top_own"][0]["pct"] == 60.0
    # Only the project's own functions, each sample counted once even through recursion.
    inclusive = {row["function"]: row["samples"] for row in summary["top_inclusive"]}
    assert inclusive == {"decode": 9, "write": 1}


def test_top_is_bounded() -> None:
    text = "".join(f"f{n} (collector/m.py) {n + 1}\n" for n in range(40))

    summary = summarise_collapsed(text, top=15)

    assert len(summary["top_own"]) == 15
    assert summary["top_own"][0] == {
        "function": "f39",
        "file": "collector/m.py",
        "samples": 40,
        "pct": round(100 * 40 / sum(range(1, 41)), 1),
    }


def _sample(executable: str, pid: int, output: Path, seconds: float) -> dict[str, Any]:
    profiler = PySpy(executable, output, rate_hz=100)
    profiler.attach(pid)
    time.sleep(seconds)  # the sampling window, not a wait for an event
    profiler.finish()
    return profiler.summary()


@pytest.mark.skipif(py_spy_path() is None, reason="py-spy is not installed")
def test_py_spy_finds_the_busy_function(tmp_path: Path) -> None:
    executable = py_spy_path()
    assert executable is not None
    with subprocess.Popen(
        [sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True
    ) as spinner:
        try:
            assert spinner.stdout is not None
            assert spinner.stdout.readline().strip() == "spinning"
            summary = _sample(executable, spinner.pid, tmp_path / "1.collapsed", 1.0)
            deadline = time.monotonic() + 20
            # On a busy machine py-spy may take longer to attach than the window: sample again.
            while not summary.get("samples") and time.monotonic() < deadline:
                summary = _sample(executable, spinner.pid, tmp_path / "2.collapsed", 2.0)
        finally:
            spinner.kill()

    assert summary["samples"] > 0, summary
    assert summary["top_own"][0]["function"] == "busy_spin_for_the_profiler", summary
    assert summary["active_share"] > 0
