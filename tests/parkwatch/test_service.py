"""End to end on real servers: a separate client publishes, the collector writes to InfluxDB 1.x."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from collector.acks import AckTracker
from collector.adapters.mqtt import MqttSource
from parkwatch.localservers import InfluxDB1, Mosquitto, VictoriaMetrics
from parkwatch.service import Collector
from parkwatch.settings import load_settings
from tests.helpers import (
    collector_settings,
    metric_value,
    publish_all,
    running_collector,
    until,
)

pytestmark = pytest.mark.servers

PER_KIND = 150
DEVICES = 5

KIND_FIELDS: dict[str, dict[str, object]] = {
    "microgrid": {"pv_kw": 120.5, "load_kw": 300.25, "grid_import_kw": 179.75, "pv_kwh": 1234.5},
    "storage": {"soc_pct": 55.5, "power_kw": -50.0, "cell_temp_max_c": 31.0, "capacity_kwh": 1000},
    "site5g": {"power_kw": 3.2, "traffic_gb": 12.5, "active_ues": 42, "on_battery": False},
    "charger": {"status": "Charging", "error_code": "NoError", "power_kw": 7.2, "connector_id": 2},
}


def good_messages(prefix: str, base_ms: int) -> list[tuple[str, bytes]]:
    """PER_KIND messages of every kind, each (device, ts) distinct."""
    messages = []
    for kind, fields in KIND_FIELDS.items():
        for i in range(PER_KIND):
            device = f"{kind}-{i % DEVICES}"
            payload = {"ts": base_ms - i * 1000, **fields, "seq": i}
            messages.append(
                (f"{prefix}/caohejing/{kind}/{device}/telemetry", orjson.dumps(payload))
            )
    return messages


def bad_messages(prefix: str, base_ms: int) -> list[tuple[str, bytes, str]]:
    """One message of every rejection class, with the reason it must be dead-lettered for."""
    t = f"{prefix}/caohejing/microgrid/meter-1/telemetry"
    return [
        (t, b'{"ts": 1, "pv_kw": ', "invalid_json"),
        (t, orjson.dumps({"ts": base_ms, "pv_kw": "12.5"}), "invalid_payload"),
        (t, b'{"ts": %d, "pv_kw": NaN}' % base_ms, "non_finite"),
        (t, b'{"ts": %d, "extra": Infinity}' % base_ms, "non_finite"),
        (f"{prefix}/caohejing/toaster/t-1/telemetry", b'{"ts": 1}', "unknown_kind"),
        (f"{prefix}/caohejing/microgrid/telemetry", b'{"ts": 1}', "invalid_topic"),
        (t, b'{"ts": %d, "pad": "%s"}' % (base_ms, b"x" * 70_000), "too_large"),
        (t, orjson.dumps({"ts": base_ms + 86_400_000, "pv_kw": 1.0}), "clock_skew"),
        (t, orjson.dumps({"pv_kw": 1.0}), "invalid_payload"),
    ]


async def test_every_good_message_becomes_exactly_one_point_and_every_bad_one_a_dead_letter(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)
    async with running_collector(settings) as (collector, running):
        base_ms = int(time.time() * 1000)
        good = good_messages(topic_prefix, base_ms)
        bad = bad_messages(topic_prefix, base_ms)
        # Interleave bad messages with good ones: the good ones around them must all be written.
        mixed: list[tuple[str, bytes]] = []
        stride = len(good) // len(bad)
        for n, (topic, payload, _) in enumerate(bad):
            mixed += good[n * stride : (n + 1) * stride]
            mixed.append((topic, payload))
        mixed += good[len(bad) * stride :]
        await asyncio.to_thread(publish_all, mosquitto, mixed)

        metrics = collector.metrics
        await until(
            lambda: metric_value(metrics, "parkwatch_points_written_total") >= len(good),
            what=f"{len(good)} points written",
            alive=running,
        )
        dead_path = settings.deadletter.path
        await until(
            lambda: dead_path.exists() and len(dead_path.read_bytes().splitlines()) >= len(bad),
            what="dead letters written",
            alive=running,
        )

    for kind, fields in KIND_FIELDS.items():
        rows = influxdb.query(influx_database, f'SELECT * FROM "{kind}"')  # noqa: S608 - test's own names
        assert len(rows) == PER_KIND, kind
        assert {row["device"] for row in rows} == {f"{kind}-{d}" for d in range(DEVICES)}
        assert {row["park"] for row in rows} == {"caohejing"}
        newest = max(rows, key=lambda row: row["time"])
        assert newest["time"] == base_ms
        assert newest["seq"] == 0
        for name, value in fields.items():
            if name == "connector_id":
                assert newest["connector"] == str(value)
            else:
                assert newest[name] == value, (kind, name)
    assert sorted(
        row["seq"] for row in influxdb.query(influx_database, "SELECT * FROM storage")
    ) == [float(i) for i in range(PER_KIND)]

    records = [orjson.loads(line) for line in dead_path.read_bytes().splitlines()]
    assert Counter(record["reason"] for record in records) == Counter(reason for *_, reason in bad)
    too_large = next(record for record in records if record["reason"] == "too_large")
    assert too_large["truncated"] is True
    assert too_large["payload_bytes"] > 70_000
    assert all(record["topic"] and record["detail"] for record in records)
    assert metric_value(metrics, "parkwatch_dead_letters_total", reason="non_finite") == 2
    assert metric_value(metrics, "parkwatch_messages_received_total") == len(mixed)


async def test_status_messages_become_device_status_points(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)
    async with running_collector(settings) as (collector, running):
        now_ms = int(time.time() * 1000)
        status = f"{topic_prefix}/lingang/charger/cp-7/status"
        await asyncio.to_thread(
            publish_all,
            mosquitto,
            [(status, orjson.dumps({"online": True, "ts": now_ms - 5000})), (status, b"offline")],
        )
        await until(
            lambda: metric_value(collector.metrics, "parkwatch_points_written_total") >= 2,
            what="2 points",
            alive=running,
        )
    rows = influxdb.query(influx_database, "SELECT * FROM device_status")
    assert [row["online"] for row in sorted(rows, key=lambda r: r["time"])] == [True, False]
    assert rows[0]["time"] == now_ms - 5000
    assert {(row["park"], row["kind"], row["device"]) for row in rows} == {
        ("lingang", "charger", "cp-7")
    }


ROGUE_EXTRAS: list[dict[str, float]] = [
    {"park": 1.0},
    {"device": 2},
    {"connector": 3},
    {"kind": 4},
    {"time": 5},  # InfluxDB 1.x drops a field named time
    {"_value": 6, "_field": 7},  # reserved in InfluxDB 2/3 and Flux
]


async def test_payload_fields_named_like_tags_never_hide_a_park_from_influxql(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    # Before the fix: one rogue device's numeric "park" field made WHERE park='p1' match 0 of
    # the measurement's 40 points (and of the chargers' 10, "connector" their connector tag).
    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)
    async with running_collector(settings) as (collector, running):
        base_ms = int(time.time() * 1000)
        messages = []
        for i in range(40):
            extra = ROGUE_EXTRAS[i // 4 % len(ROGUE_EXTRAS)] if i % 4 == 0 else {}
            payload = {"ts": base_ms - i, "pv_kw": float(i), **extra}
            messages.append((f"{topic_prefix}/p1/microgrid/m-{i % 3}/telemetry", payload))
        for i in range(10):
            payload = {"ts": base_ms - i, "power_kw": 7.0, "connector_id": 2, "connector": 5}
            messages.append((f"{topic_prefix}/p1/charger/cp-1/telemetry", payload))
        await asyncio.to_thread(
            publish_all, mosquitto, [(topic, orjson.dumps(body)) for topic, body in messages]
        )
        await until(
            lambda: collector.metrics.points_written._value.get() >= 50,
            what="50 points written",
            alive=running,
        )
        dropped = collector.metrics.fields_dropped.labels("reserved_name")._value.get()

    def count(query: str) -> int:
        rows = influxdb.query(influx_database, query)
        return int(rows[0]["count"]) if rows else 0

    assert count("SELECT count(pv_kw) FROM microgrid WHERE park='p1'") == 40
    assert count("SELECT count(power_kw) FROM charger WHERE park='p1' AND connector='2'") == 10
    field_keys = {row["fieldKey"] for row in influxdb.query(influx_database, "SHOW FIELD KEYS")}
    assert field_keys == {"pv_kw", "power_kw"}
    # Every 4th microgrid message has rogue fields (11 in all), every charger message one.
    assert dropped == 11 + 10
    assert settings.deadletter.path.read_bytes() == b""  # created at start, no record in it


async def test_health_and_metrics_endpoints(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)
    async with running_collector(settings) as (collector, _):
        base = f"http://127.0.0.1:{collector.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as response:
                health = await response.json()
                assert response.status == 200, health
            assert health["checks"]["mqtt"]["ok"] is True
            assert health["checks"]["sink"]["ok"] is True
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
    for name in (
        "parkwatch_messages_received_total",
        "parkwatch_points_written_total",
        'parkwatch_dead_letters_total{reason="invalid_json"}',
        'parkwatch_queue_depth{queue="inbox"}',
        "parkwatch_write_batch_lines_bucket",
        "parkwatch_mqtt_reconnects_total",
        "parkwatch_unacked_messages",
    ):
        assert name in text, name


async def test_a_spool_that_cannot_be_opened_degrades_health_but_not_the_collector(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool directory should be")
    settings = collector_settings(
        tmp_path,
        mosquitto,
        influxdb,
        influx_database,
        topic_prefix,
        spool={"directory": blocker / "spool"},
    )
    async with running_collector(settings) as (collector, running):
        now_ms = int(time.time() * 1000)
        topic = f"{topic_prefix}/p/microgrid/m-1/telemetry"
        messages = [(topic, orjson.dumps({"ts": now_ms - n, "pv_kw": 1.5})) for n in range(20)]
        await asyncio.to_thread(publish_all, mosquitto, messages)
        written = collector.metrics.points_written
        await until(lambda: written._value.get() == 20, what="20 points written", alive=running)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{collector.http_port}/healthz") as response,
        ):
            health = await response.json()
        spool_errors = collector.metrics.registry.get_sample_value(
            "parkwatch_spool_errors_total", {"op": "open"}
        )
    assert response.status == 503, health
    assert health["checks"]["spool"]["ok"] is False
    assert "could not be opened, running without it" in health["checks"]["spool"]["detail"]
    assert health["checks"]["sink"]["ok"] is True
    assert spool_errors == 1


async def test_the_v2_write_path_end_to_end_into_victoriametrics(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    victoria: VictoriaMetrics,
    topic_prefix: str,
) -> None:
    """No InfluxDB 2/3 runs here: VictoriaMetrics speaks the v2 write API influxdb-client uses."""
    settings = collector_settings(
        tmp_path,
        mosquitto,
        influxdb,
        "unused",
        topic_prefix,
        influx={"url": victoria.url, "api": "v2", "token": "t0ken", "database": "parkwatch"},
    )
    async with running_collector(settings) as (collector, running):
        base_ms = int(time.time() * 1000)
        park = topic_prefix.replace("-", "_")  # a label value unique to this test
        messages = [
            (
                f"{topic_prefix}/{park}/storage/bess-{i % 3}/telemetry",
                orjson.dumps({"ts": base_ms - i * 1000, "soc_pct": 50.0 + i}),
            )
            for i in range(30)
        ]
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await until(
            lambda: metric_value(collector.metrics, "parkwatch_points_written_total") >= 30,
            alive=running,
        )

    def samples() -> dict[tuple[str, int], float]:
        return {
            (s["metric"]["device"], ts): value
            for s in victoria.export(f'storage_soc_pct{{park="{park}"}}')
            for ts, value in zip(s["timestamps"], s["values"], strict=True)
        }

    # VictoriaMetrics shows samples of the current hour up to ~1 s after a flush.
    await until(lambda: len(samples()) >= 30, what="30 samples visible in VictoriaMetrics")
    found = samples()
    assert len(found) == 30
    assert found[("bess-0", base_ms)] == 50.0
    assert found[("bess-2", base_ms - 29_000)] == 79.0


@pytest.mark.servers
async def test_an_influx_password_in_the_url_shows_nowhere_and_is_used_to_authenticate(
    *,
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb_auth: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not in the start-up line, /healthz (served on 0.0.0.0 in the Dockerfile), write errors."""
    assert influxdb_auth.admin is not None
    user, password = influxdb_auth.admin
    url = f"http://{user}:{quote(password, safe='')}@{influxdb_auth.host}:{influxdb_auth.port}"
    settings = collector_settings(
        tmp_path, mosquitto, influxdb_auth, influx_database, topic_prefix, influx={"url": url}
    )
    caplog.set_level(logging.DEBUG)
    base_ms = int(time.time() * 1000)
    topic = f"{topic_prefix}/p1/microgrid/m-1/telemetry"
    try:
        async with running_collector(settings) as (collector, running):
            first = {"ts": base_ms, "pv_kw": 1.5, "aux": 1.0}
            publish_all(mosquitto, [(topic, orjson.dumps(first))])
            await until(
                lambda: metric_value(collector.metrics, "parkwatch_points_written_total") == 1,
                alive=running,
            )
            # A write InfluxDB refuses (float field, now bool): the warning names the sink's URL.
            conflict = {"ts": base_ms + 1, "pv_kw": 1.5, "aux": True}
            publish_all(mosquitto, [(topic, orjson.dumps(conflict))])
            await until(
                lambda: (
                    metric_value(collector.metrics, "parkwatch_write_errors_total", kind="rejected")
                    >= 1
                ),
                alive=running,
            )
            health_url = f"http://127.0.0.1:{collector.http_port}/healthz"
            async with aiohttp.ClientSession() as http, http.get(health_url) as reply:
                health = await reply.text()
                assert reply.status == 200, health
    finally:
        influxdb_auth.drop_database(influx_database)
    shown = f"{health}\n{caplog.text}"
    assert f"{influxdb_auth.host}:{influxdb_auth.port}" in shown  # the URL is shown ...
    assert "the database refuses 1 lines" in caplog.text
    for secret in (password, quote(password, safe=""), quote(password)):
        assert secret not in shown  # ... without its password


# -- flow control: what the README promises about unacked messages --------------------------------


class HeldSink:
    """A ``Sink`` whose writes wait until ``release`` is set: nothing is written or acked."""

    name = "held-sink"
    problem: str | None = None

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.lines: Counter[str] = Counter()

    async def start(self) -> None:
        """Nothing to open."""

    async def write(self, body: bytes) -> None:
        """Wait for ``release``, then keep the lines."""
        await self.release.wait()
        self.lines.update(body.decode().split("\n"))

    async def ping(self) -> bool:
        """Always answers."""
        return True

    async def close(self) -> None:
        """Nothing to release."""

    def of(self, measurement: str) -> Counter[str]:
        """The lines written of ``measurement`` (the collector writes its own metrics too)."""
        return Counter(
            {line: n for line, n in self.lines.items() if line.startswith(f"{measurement},")}
        )


class PeakTracker(AckTracker):
    """Remembers the most QoS 1 messages ever unacknowledged at once on a connection."""

    def __init__(self, send_ack: Callable[[int, int], None]) -> None:
        super().__init__(send_ack)
        self.qos_received = 0
        self.peak = 0

    def received(self, mid: int, qos: int) -> int:
        """Count the message, then register it."""
        if qos > 0:
            self.qos_received += 1
            self.peak = max(self.peak, self.qos_received - self.acked)
        return super().received(mid, qos)

    def reset(self) -> int:
        """A new connection: nothing of the old one is outstanding."""
        self.qos_received = self.acked
        return super().reset()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_unacked_messages_never_exceed_receive_maximum_while_the_broker_holds_the_rest(
    tmp_path: Path, mosquitto: Mosquitto, topic_prefix: str, protocol: str
) -> None:
    """A collector whose database does not answer yet: it holds ``mqtt.receive_maximum`` (20)
    unacked messages and the broker keeps the other 180; once writes succeed all 200 arrive, and
    no message ever found 20 others unacked before it (every receipt is counted, none sampled).

    Mosquitto 2.0.11 keeps to an MQTT 5 receive maximum only until acks flow (then it sent up to
    47 unacked for 20), and MQTT 3.1.1 cannot announce one: the collector enforces it itself."""
    receive_maximum, total = 20, 200
    trackers: list[PeakTracker] = []

    class PeakSource(MqttSource):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tracker = PeakTracker(self._send_ack)
            trackers.append(self.tracker)

    settings = load_settings(
        None,
        mqtt={
            "url": mosquitto.url,
            "protocol": protocol,
            "topic_prefix": topic_prefix,
            "client_id": f"collector-{topic_prefix}"[:64],
            "receive_maximum": receive_maximum,
        },
        spool={"directory": tmp_path / "spool"},
        deadletter={"path": tmp_path / "deadletter.jsonl"},
        # Its own state: one left in var/state by an earlier session fired DeviceOffline for
        # mg-1 (its stale timer came due when the first reading moved the restored clock on),
        # and those alerts lines made the count of written lines miss.
        state={"directory": tmp_path / "state"},
        http={"port": 0},
    )
    sink = HeldSink()
    collector = Collector(settings, sink=sink, source_factory=PeakSource)
    stop = asyncio.Event()
    running = asyncio.create_task(collector.run(stop))
    try:
        await until(collector.connected.is_set, what="collector subscribed", alive=running)
        (tracker,) = trackers
        base_ms = int(time.time() * 1000)
        topic = f"{topic_prefix}/lingang/microgrid/mg-1/telemetry"
        messages = [(topic, orjson.dumps({"ts": base_ms - i, "seq": i})) for i in range(total)]
        await asyncio.to_thread(publish_all, mosquitto, messages)  # all PUBACKed: queued for us
        await until(
            lambda: tracker.qos_received >= receive_maximum,
            what=f"{receive_maximum} messages received",
            alive=running,
        )
        assert tracker.qos_received == receive_maximum
        assert tracker.acked == 0
        assert metric_value(collector.metrics, "parkwatch_points_written_total") == 0

        sink.release.set()
        # Only the telemetry: once the test has taken 10 s, the collector's own metrics
        # (parkwatch/selfmetrics.py) are written too.
        await until(
            lambda: (
                len(sink.of("microgrid")) == total and tracker.qos_received - tracker.acked == 0
            ),
            what=f"all {total} written and acked",
            alive=running,
        )
    finally:
        sink.release.set()  # else the drain would wait for the held writes
        stop.set()
        await running
    written = sink.of("microgrid")
    assert {int(line.rsplit(" ", 1)[1]) for line in written} == {base_ms - i for i in range(total)}
    assert set(written.values()) == {1}  # each written once
    assert tracker.qos_received == total
    assert tracker.peak == receive_maximum
