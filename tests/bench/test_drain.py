"""Smoke test of ``bench.drain``: every stage runs on a tiny backlog and reports every figure.

No timing assertions (figures of a tiny run say nothing about performance): only that the
harness still works end to end against the real servers, so it cannot rot between the runs
that matter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.drain import CONTENDERS, main

pytestmark = pytest.mark.servers

TINY = [
    "--quick", "--messages", "400", "--naive-messages", "60", "--devices", "100", "--parks", "4",
    "--live-rate", "400", "--live-seconds", "1", "--no-profile",
]  # fmt: skip
"""Every stage, as small as still makes sense (the profile has its own test)."""

POSITIVE: list[tuple[str, ...]] = [
    *(("drain", name, "msgs_per_s", "median") for name in CONTENDERS),
    *(("drain", name, "elapsed_s", "median") for name in CONTENDERS),
    *(("drain", name, "cpu_s", "median") for name in CONTENDERS),
    ("drain", "parkwatch", "startup_s", "median"),
    ("drain", "parkwatch", "vmhwm_mb", "median"),
    ("drain", "parkwatch", "vmrss_mb", "median"),
    ("drain", "parkwatch_x2", "smallest_share", "median"),
    ("ratios", "parkwatch_vs_gmqtt", "median"),
    ("ratios", "parkwatch_vs_naive", "median"),
    ("ratios", "parkwatch_vs_paho", "median"),
    ("ratios", "two_vs_one_collector", "median"),
    ("scale_out", "ratio", "median"),
    ("scale_out", "elapsed_s", "median"),
    ("startup", "startup_s", "median"),
    ("startup", "startup_cpu_s", "median"),
    ("startup", "rss_idle_mb", "median"),
    ("startup", "with_backlog_s", "median"),
    ("memory", "devices"),
    ("memory", "vmhwm_mb", "median"),
    ("memory", "vmrss_mb", "median"),
    ("memory", "rss_idle_mb", "median"),
    ("live", "offered_msgs_per_s"),
    ("live", "offered_messages"),
    ("live", "probes"),
    ("live", "queryable_p50_s"),
    ("live", "queryable_p99_s"),
    ("live", "queryable_max_s"),
    ("live", "vmhwm_mb"),
]
"""Figures every run must report as a positive number."""

NON_NEGATIVE: list[tuple[str, ...]] = [
    ("scale_out", "broker_cpu_s", "median"),
    ("scale_out", "influx_cpu_s", "median"),
    ("scale_out", "machine_busy_fraction", "median"),
    ("live", "lag_at_end_messages"),
]
"""CPU seconds of a tiny run can round to zero ticks; a lag of zero means it kept up."""


def _at(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = result
    for key in path:
        assert isinstance(node, dict), f"{'.'.join(path)}: {key!r} of a non-mapping"
        assert key in node, f"{'.'.join(path)}: no {key!r} in {sorted(node)}"
        node = node[key]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_every_figure_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "drain.json"

    status = main([*TINY, "--workdir", str(tmp_path / "work"), "--out", str(out)])

    result = orjson.loads(out.read_bytes())
    assert status == 0, result["errors"]
    assert result["errors"] == []
    for path in POSITIVE:
        value = _at(result, path)
        assert _is_number(value), f"{'.'.join(path)} = {value!r}"
        assert value > 0, f"{'.'.join(path)} = {value!r}"
    for path in NON_NEGATIVE:
        value = _at(result, path)
        assert _is_number(value), f"{'.'.join(path)} = {value!r}"
        assert value >= 0, f"{'.'.join(path)} = {value!r}"
    # Always present; a number once the drain's CPU seconds exceed startup's, which a tiny
    # backlog does not guarantee.
    projected = _at(result, ("scale_out", "projected_per_core_msgs_per_s"))
    assert projected is None or _at(projected, ("median",)) > 0
    fire = _at(result, ("live", "rule_fire"))
    assert fire["metric"] is not None or fire["note"].startswith("SLOT")
    meta = result["meta"]
    assert len(meta["loadavg_start"]) == 3
    assert (meta["messages"], meta["devices"], meta["rounds"]) == (400, 100, 1)
    assert meta["split_mode"] == "partition"
    assert result["profile"] == {"skipped": "--no-profile"}
    printed = capsys.readouterr().out
    assert printed.startswith("load average at start: ")
    for contender in ("bare gmqtt", "bare paho-mqtt", "parkwatch run", "naive", "two parkwatch"):
        assert contender in printed
    assert "ratio parkwatch_vs_gmqtt" in printed
