"""``bench.stages`` on a tiny backlog, so it cannot rot (no timing assertions)."""

from __future__ import annotations

import time
from pathlib import Path

from bench.backlog import balanced_parks
from bench.backlog import telemetry as make_telemetry
from bench.stages import PREFIX, parse_variant, run_once
from collector.messages import RawMessage


def test_a_variant_names_settings_by_section_with_json_values() -> None:
    name, variant = parse_variant("small:writer.batch_size=1000,influx.gzip=false,mqtt.client=paho")
    assert name == "small"
    assert variant == {
        "writer": {"batch_size": 1000},
        "influx": {"gzip": False},
        "mqtt": {"client": "paho"},
    }
    assert parse_variant("defaults:") == ("defaults", {})


def test_the_stages_take_in_and_ack_a_whole_backlog_into_a_null_sink(tmp_path: Path) -> None:
    now = time.time()
    messages = make_telemetry(PREFIX, 300, devices=50, parks=balanced_parks(3))
    backlog = [RawMessage(topic, payload, now, n) for n, (topic, payload) in enumerate(messages)]
    # Returns once the replaying source has counted an ack for every message (or times out).
    elapsed, cpu = run_once(tmp_path, backlog, None, "tiny", {"writer": {"batch_size": 64}})
    assert elapsed > 0
    assert cpu > 0
