"""At-least-once delivery under faults: a collector process against real Mosquitto and InfluxDB.

The promise under test: every QoS 1 message the broker accepted ends up in InfluxDB as exactly one
point, because the collector acks a message only once its point is written, fsynced into the
spool, or dead-lettered, and a redelivered message rewrites the same point (same series and
timestamp). Each test publishes *numbered* messages (``ts = base + i``), breaks something while
they flow, and then reads every number back: the multiset of ``seq`` in InfluxDB must be exactly
the set published (no number missing, none twice).

=====================================  =========================================================
test                                   fault
=====================================  =========================================================
killed_mid_stream                      ``kill -9`` of the collector, three times, mid-stream
influxdb_outage                        InfluxDB stopped under load: spool, then replay
broker_restart                         Mosquitto restarted (persistence on) mid-stream
sigterm_drains_what_is_in_flight       SIGTERM with 500 writes hanging (InfluxDB frozen) and
                                       2500 messages at the broker: drained, rest to next run
full_spool                             InfluxDB down until the 1 MiB spool is full: stop acking
torn_spool_tail                        the spool's last record torn after a crash: only it lost
fuzz                                   10 000+ bad payloads/topics: all dead-lettered, no crash
batch_larger_than_the_spool            one batch bigger than the whole spool is still written
full_spool_disk                        the spool's filesystem full (ENOSPC), InfluxDB down, a
                                       restart: stop acking, keep running, recover
database_dropped_under_load            ``DROP DATABASE`` mid-stream: created again, data arrives
database_dropped_without_create        the same with ``create_database`` off: 503, loud, spooled
mistyped_retention_policy              a policy that does not exist: clear error, 503, spooled
partly_bad_batch                       real InfluxDB's partial write: good lines once, bad ones
                                       dead-lettered (``rejected_by_sink``)
field_type_conflicts                   10 % conflicting: no write request per message
devices_beyond_a_series_limit          ``max-values-per-tag`` reached: ``series_limit``, learnt
=====================================  =========================================================

The collector runs as ``python -m parkwatch run`` (tests/faults.py), configured through
``PARKWATCH_*`` variables, with its own spool, dead-letter file, HTTP port and MQTT client id; it is
observed from outside through ``/metrics``, ``/healthz``, its log and InfluxDB. Servers a test
stops or restarts are its own (in ``tmp_path``); the others are the session's. Counts each test
saw are recorded with ``record_property`` and printed at the end of the run (tests/conftest.py).
``PARKWATCH_FAULT_SCALE=10`` multiplies the message counts (and the per-test timeout).
"""

from __future__ import annotations

import base64
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from collector.decode import Decoder
from collector.messages import RawMessage, Reason
from collector.metrics import Metrics
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.points import Point
from parkwatch.settings import IngestSettings
from tests.faults import (
    FAULT_SCALE,
    CollectorProcess,
    Publisher,
    influx_count,
    influx_seqs,
    numbered_message,
    numbered_stream,
    read_spool,
    scaled,
    seqs_of_lines,
    small_disk,
    wait_until,
)

RATE = 800.0  # messages per second while a fault is injected: a stream lasting a few seconds
WAIT_S = 60.0  # deadline for a state to be reached; generous for a loaded 2-core CI machine
RECONNECT_S = 15.0  # "within seconds": deadline for the collector to be back after a broker restart
DATABASE = "faults"  # on the servers a test owns
MIB = 2**20

Counts = dict[str, object]

pytestmark = [pytest.mark.servers, pytest.mark.timeout(round(300 * max(1.0, FAULT_SCALE)))]


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


def first_number_ms() -> int:
    """``ts`` of message 0: ten minutes ago, well inside the collector's clock-skew window."""
    return now_ms() - 600_000


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def counts(record_property: Callable[[str, object], None]) -> Iterator[Counts]:
    """What the test counted; recorded as user properties at teardown, even if it failed."""
    recorded: Counts = {}
    started = time.monotonic()
    yield recorded
    recorded["elapsed_s"] = round(time.monotonic() - started, 1)
    for key, value in recorded.items():
        record_property(key, value)


@dataclass
class Rig:
    """Makes collectors and publishers for one test and stops every one of them at teardown."""

    tmp_path: Path
    topic_prefix: str
    collectors: list[CollectorProcess] = field(default_factory=list)
    publishers: list[Publisher] = field(default_factory=list)

    def collector(
        self, broker: Mosquitto, influx: InfluxDB1, database: str, **env: str
    ) -> CollectorProcess:
        """A collector process (not started) for this test's prefix; ``env`` adds settings."""
        process = CollectorProcess(
            self.tmp_path / "collector",
            broker=broker,
            influx=influx,
            database=database,
            topic_prefix=self.topic_prefix,
            env=env,
        )
        self.collectors.append(process)
        return process

    def publisher(self, broker: Mosquitto) -> Publisher:
        """A connected publisher with a fixed client id (its session survives broker restarts)."""
        publisher = Publisher(broker, client_id=f"pub-{self.topic_prefix}"[:64])
        self.publishers.append(publisher)
        publisher.connect()
        return publisher

    def publish_padded_while_influx_is_down(
        self,
        collector: CollectorProcess,
        broker: Mosquitto,
        influx: InfluxDB1,
        total: int,
        base_ms: int,
    ) -> Publisher:
        """Start ``collector``, stop ``influx``, publish ``total`` padded numbered messages, and
        return the publisher once the broker has accepted every one of them."""
        collector.start()
        collector.wait_subscribed()
        influx.stop()
        publisher = self.publisher(broker)
        publisher.start_stream(
            numbered_stream(self.topic_prefix, range(total), base_ms, pad_fields=PAD_FIELDS)
        )
        publisher.join_stream()
        publisher.wait_accepted(total)
        return publisher

    def close(self) -> None:
        """Kill collectors first (so they do not log the servers going away), then publishers."""
        for process in self.collectors:
            process.close()
        for publisher in self.publishers:
            publisher.close()


@pytest.fixture
def rig(tmp_path: Path, topic_prefix: str) -> Iterator[Rig]:
    """Collectors and publishers of this test, all stopped at teardown."""
    made = Rig(tmp_path, topic_prefix)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    """An InfluxDB only this test uses (it stops and starts it), with database ``DATABASE``."""
    with InfluxDB1(tmp_path / "influxdb") as server:
        server.create_database(DATABASE)
        yield server


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto only this test uses (it restarts it), persistence on."""
    with Mosquitto(tmp_path / "mosquitto", persistence=True) as broker:
        yield broker


# -- checks shared by the tests ---------------------------------------------------------------


def wait_for_points(
    influx: InfluxDB1,
    database: str,
    count: int,
    collector: CollectorProcess,
    *,
    base_ms: int,
    upto: int,
    timeout: float = WAIT_S,
) -> None:
    """Wait until InfluxDB holds ``count`` numbered points (more would fail the exact check).

    On timeout the message lists the first numbers below ``upto`` that are not stored.
    """

    def absent() -> str:
        stored = set(influx_seqs(influx, database, base_ms, upto))
        gone = [seq for seq in range(upto) if seq not in stored]
        return f"InfluxDB holds {len(stored)}; {len(gone)} numbers absent, e.g. {gone[:30]}"

    wait_until(
        lambda: influx_count(influx, database) >= count,
        timeout=timeout,
        what=f"{count} points in InfluxDB",
        collector=collector,
        context=absent,
    )


def assert_exactly_once(
    influx: InfluxDB1,
    database: str,
    base_ms: int,
    expected: set[int],
    *,
    upto: int,
    collector: CollectorProcess,
    counts: Counts,
) -> None:
    """The numbers stored in InfluxDB are ``expected``, each exactly once, and nothing else."""
    seqs = influx_seqs(influx, database, base_ms, upto)
    total = influx_count(influx, database)
    counts["points_in_influx"] = total
    stored = Counter(seqs)
    missing = sorted(expected - stored.keys())
    unexpected = sorted(stored.keys() - expected)
    twice = sorted(seq for seq, n in stored.items() if n > 1)
    counts["missing"] = len(missing)
    counts["duplicated"] = len(twice)
    summary = (
        f"{len(missing)} missing {missing[:30]}, {len(unexpected)} unexpected {unexpected[:30]}, "
        f"{len(twice)} stored twice {twice[:30]}; {total} points in the measurement, "
        f"{len(seqs)} in the numbered range\n{collector.log_tail()}"
    )
    assert not missing, summary
    assert not unexpected, summary
    assert not twice, summary
    assert total == len(seqs), summary


def assert_drains_on_sigterm(collector: CollectorProcess) -> None:
    """SIGTERM drains and exits 0 (so the test also ends with the documented shutdown)."""
    code = collector.terminate()
    assert code == 0, f"collector exited with {code} after SIGTERM\n{collector.log_tail()}"


def health_is(collector: CollectorProcess, status: int, **checks: bool) -> bool:
    """Whether ``/healthz`` answers ``status`` with each named check as given."""
    code, body = collector.health()
    found = body.get("checks", {})
    return code == status and all(found.get(n, {}).get("ok") is ok for n, ok in checks.items())


def metric(collector: CollectorProcess, name: str) -> float:
    """One unlabelled sample of the collector's ``/metrics``."""
    return collector.metric(name)


# -- 1. kill -9 ------------------------------------------------------------------------------


def test_collector_killed_mid_stream_loses_and_duplicates_nothing(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """``kill -9`` three times while messages flow and points are written: 0 lost, 0 twice.

    A crash loses the collector's memory (batches, unacked messages, ack state); what it had not
    acked the broker redelivers to the restarted process (same client id, persistent session),
    and points written but not acked are written again as the same points.
    """
    total, kills = scaled(3000), 3
    base_ms = first_number_ms()
    collector = rig.collector(mosquitto, influxdb, influx_database)
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.start_stream(numbered_stream(rig.topic_prefix, range(total), base_ms), rate=RATE)

    mid_stream = 0
    written_before_kill: list[int] = []
    received_before_kill: list[int] = []
    unacked_before_kill: list[int] = []  # just before the kill: what the broker must redeliver
    for k in range(1, kills + 1):
        threshold = total * k // (kills + 1)

        def ready(threshold: int = threshold) -> dict[str, float]:
            # Mid-stream and mid-write: the publisher is past the threshold and this process
            # has written points (its own counter starts at 0 on every start).
            samples = collector.metrics()
            written = samples["parkwatch_points_written_total"]
            return samples if publisher.accepted_count >= threshold and written > 0 else {}

        samples = wait_until(
            ready,
            timeout=WAIT_S,
            what=f"kill #{k}: stream and writes under way",
            collector=collector,
        )
        for name, seen in (
            ("parkwatch_points_written_total", written_before_kill),
            ("parkwatch_messages_received_total", received_before_kill),
            ("parkwatch_unacked_messages", unacked_before_kill),
        ):
            seen.append(int(samples[name]))
        mid_stream += publisher.streaming
        collector.kill()
        collector.start()
        collector.wait_subscribed()

    publisher.join_stream()
    publisher.wait_accepted(total)
    wait_for_points(influxdb, influx_database, total, collector, base_ms=base_ms, upto=total)
    counts.update(
        published=publisher.published,
        accepted=publisher.accepted_count,
        kills=collector.kills,
        kills_while_publishing=mid_stream,
        points_written_before_each_kill=written_before_kill,
        received_before_each_kill=received_before_kill,
        unacked_before_each_kill=unacked_before_kill,
        received_after_last_restart=int(metric(collector, "parkwatch_messages_received_total")),
    )
    assert_exactly_once(
        influxdb,
        influx_database,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    assert mid_stream >= 1, "no kill happened while the publisher was still sending"
    assert_drains_on_sigterm(collector)


# -- 2. InfluxDB outage ----------------------------------------------------------------------


def test_influxdb_outage_is_spooled_and_replayed(
    mosquitto: Mosquitto,
    own_influx: InfluxDB1,
    rig: Rig,
    counts: Counts,
) -> None:
    """InfluxDB stopped under load: batches go to the spool (and are acked), health fails on
    the sink; once InfluxDB is back the spool drains to 0 bytes and every number is stored once.
    """
    total = scaled(4000)
    base_ms = first_number_ms()
    collector = rig.collector(mosquitto, own_influx, DATABASE)
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.start_stream(numbered_stream(rig.topic_prefix, range(total), base_ms), rate=RATE)

    wait_until(
        lambda: publisher.accepted_count >= total // 4 and influx_count(own_influx, DATABASE) > 0,
        timeout=WAIT_S,
        what="a quarter of the stream published and points in InfluxDB",
        collector=collector,
    )
    own_influx.stop()
    wait_until(
        lambda: health_is(collector, 503, sink=False),
        timeout=WAIT_S,
        what="/healthz 503 with the sink check failing",
        collector=collector,
    )
    wait_until(
        lambda: (
            publisher.accepted_count >= total * 3 // 4
            and metric(collector, "parkwatch_spooled_batches_total") >= 2
        ),
        timeout=WAIT_S,
        what="half the stream published during the outage, batches spooled",
        collector=collector,
    )
    counts["accepted_before_influx_back"] = publisher.accepted_count
    counts["spool_bytes_at_peak"] = int(metric(collector, "parkwatch_spool_bytes"))
    own_influx.start()

    wait_until(
        lambda: health_is(collector, 200, sink=True),
        timeout=WAIT_S,
        what="/healthz 200 again",
        collector=collector,
    )
    publisher.join_stream()
    publisher.wait_accepted(total)
    wait_for_points(own_influx, DATABASE, total, collector, base_ms=base_ms, upto=total)
    wait_until(
        lambda: metric(collector, "parkwatch_spool_bytes") == 0,
        timeout=WAIT_S,
        what="the spool drained",
        collector=collector,
    )
    samples = collector.metrics()
    counts.update(
        published=publisher.published,
        accepted=publisher.accepted_count,
        spooled_batches=int(samples["parkwatch_spooled_batches_total"]),
        replayed_points=int(samples["parkwatch_replayed_points_total"]),
        write_errors_unavailable=int(samples['parkwatch_write_errors_total{kind="unavailable"}']),
    )
    assert_exactly_once(
        own_influx,
        DATABASE,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    assert samples["parkwatch_spooled_batches_total"] > 0
    assert samples["parkwatch_replayed_points_total"] > 0
    assert_drains_on_sigterm(collector)


# -- 3. broker restart -----------------------------------------------------------------------


def test_broker_restart_mid_stream_loses_nothing(
    own_broker: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """Mosquitto restarted (SIGTERM saves its persistence db) mid-stream: the collector is back
    within seconds (reconnect counted, health 200) and every accepted number is stored once.
    """
    total = scaled(4000)
    base_ms = first_number_ms()
    collector = rig.collector(own_broker, influxdb, influx_database)
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(own_broker)
    publisher.start_stream(numbered_stream(rig.topic_prefix, range(total), base_ms), rate=RATE)

    wait_until(
        lambda: (
            publisher.accepted_count >= total // 3 and influx_count(influxdb, influx_database) > 0
        ),
        timeout=WAIT_S,
        what="a third of the stream published and points in InfluxDB",
        collector=collector,
    )
    accepted_at_restart = publisher.accepted_count
    own_broker.restart()
    wait_until(
        lambda: (
            metric(collector, "parkwatch_mqtt_reconnects_total") >= 1
            and metric(collector, "parkwatch_mqtt_connected") == 1
            and health_is(collector, 200, mqtt=True)
        ),
        timeout=RECONNECT_S,
        what="the collector reconnected and healthy",
        collector=collector,
    )
    publisher.join_stream()
    publisher.wait_accepted(total)
    wait_for_points(influxdb, influx_database, total, collector, base_ms=base_ms, upto=total)
    counts.update(
        published=publisher.published,
        accepted=publisher.accepted_count,
        accepted_at_restart=accepted_at_restart,
        collector_reconnects=int(metric(collector, "parkwatch_mqtt_reconnects_total")),
        publisher_reconnects=publisher.connects - 1,
    )
    assert_exactly_once(
        influxdb,
        influx_database,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    assert publisher.connects >= 2, "the publisher never saw the broker go away"
    assert_drains_on_sigterm(collector)


# -- 3b. SIGTERM with messages in flight ---------------------------------------------------

IN_FLIGHT = 500  # the collector's receive maximum here: what it holds unacked at the SIGTERM


def test_sigterm_drains_what_is_in_flight_and_leaves_the_rest_to_the_broker(
    mosquitto: Mosquitto,
    own_influx: InfluxDB1,
    rig: Rig,
    counts: Counts,
) -> None:
    """SIGTERM while the collector holds 500 unacked messages whose writes hang on a frozen
    InfluxDB (SIGSTOP) and the broker holds 2500 more: the collector stops reading, finishes the
    500 once InfluxDB thaws (written or spooled, and acked) and exits 0; the next run receives
    exactly the other 2500. Every accepted number ends up in InfluxDB exactly once.

    Drained before exit: what the first run took in is stored before it exits (InfluxDB plus its
    spool hold exactly 500) and is not redelivered (the second run receives exactly 2500).
    """
    total = max(scaled(3000), 2 * IN_FLIGHT)
    base_ms = first_number_ms()
    collector = rig.collector(
        mosquitto,
        own_influx,
        DATABASE,
        PARKWATCH_MQTT__RECEIVE_MAXIMUM=str(IN_FLIGHT),
        PARKWATCH_INFLUX__TIMEOUT_S="120",  # a write waits for the frozen InfluxDB, no retry
    )
    collector.start()
    collector.wait_subscribed()
    influx_pid = own_influx.pid
    assert influx_pid is not None
    os.kill(influx_pid, signal.SIGSTOP)
    try:
        publisher = rig.publisher(mosquitto)
        publisher.publish_many(numbered_stream(rig.topic_prefix, range(total), base_ms))
        publisher.wait_accepted(total)
        wait_until(
            lambda: metric(collector, "parkwatch_unacked_messages") == IN_FLIGHT,
            timeout=WAIT_S,
            what=f"{IN_FLIGHT} messages unacked, their writes hanging",
            collector=collector,
        )
        samples = collector.metrics()
        counts.update(
            accepted=publisher.accepted_count,
            unacked_at_sigterm=int(samples["parkwatch_unacked_messages"]),
            received_at_sigterm=int(samples["parkwatch_messages_received_total"]),
            written_at_sigterm=int(samples["parkwatch_points_written_total"]),
        )
        collector.send_sigterm()
        wait_until(
            lambda: "stopping: draining the pipeline" in collector.log_text(),
            timeout=WAIT_S,
            what="the collector draining",
        )
    finally:
        os.kill(influx_pid, signal.SIGCONT)
    code = collector.wait_exit()
    assert code == 0, f"collector exited with {code} after SIGTERM\n{collector.log_tail()}"

    stored_by_first_run = influx_count(own_influx, DATABASE)
    spooled_by_first_run = sum(
        len(seqs_of_lines(record.payload, base_ms)) for record in read_spool(collector.spool_dir)
    )
    counts.update(
        stored_by_first_run=stored_by_first_run, spooled_by_first_run=spooled_by_first_run
    )
    assert stored_by_first_run + spooled_by_first_run == IN_FLIGHT, collector.log_tail()

    collector.start()
    collector.wait_subscribed()
    wait_for_points(own_influx, DATABASE, total, collector, base_ms=base_ms, upto=total)
    wait_until(
        lambda: (
            metric(collector, "parkwatch_messages_received_total") >= total - IN_FLIGHT
            and metric(collector, "parkwatch_unacked_messages") == 0
        ),
        timeout=WAIT_S,
        what="the rest received and acked by the second run",
        collector=collector,
    )
    received_by_second_run = int(metric(collector, "parkwatch_messages_received_total"))
    counts["received_by_second_run"] = received_by_second_run
    assert received_by_second_run == total - IN_FLIGHT
    assert_exactly_once(
        own_influx,
        DATABASE,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    assert_drains_on_sigterm(collector)


# -- 4. full spool ---------------------------------------------------------------------------

PAD_FIELDS = 16  # numeric extras that make a line ~335 bytes: 1 MiB in ~3 100 messages


def line_bytes(prefix: str, base_ms: int) -> int:
    """Bytes of line protocol (newline included) the collector makes of one padded message."""
    topic, payload = numbered_message(prefix, 0, base_ms, pad_fields=PAD_FIELDS)
    decoder = Decoder(IngestSettings(), Metrics(), topic_prefix=prefix)
    point = decoder.decode(RawMessage(topic, payload, time.time(), 0))
    assert isinstance(point, Point), point
    return len(point.line) + 1


def test_full_spool_stops_acking_instead_of_dropping(
    mosquitto: Mosquitto,
    own_influx: InfluxDB1,
    rig: Rig,
    counts: Counts,
) -> None:
    """InfluxDB down and 1.5 MiB of lines for a 1 MiB spool: the collector stops acking (spool
    full, health 503 on the spool check, messages left unacked) instead of dropping anything;
    once InfluxDB is back the spool drains and every number is stored once.
    """
    base_ms = first_number_ms()
    per_line = line_bytes(rig.topic_prefix, base_ms)
    total = max(scaled(2500), math.ceil(1.5 * MIB / per_line))
    collector = rig.collector(
        mosquitto,
        own_influx,
        DATABASE,
        PARKWATCH_SPOOL__MAX_BYTES=str(MIB),
        PARKWATCH_SPOOL__SEGMENT_BYTES=str(64 * 1024),
    )
    publisher = rig.publish_padded_while_influx_is_down(
        collector, mosquitto, own_influx, total, base_ms
    )

    wait_until(
        lambda: metric(collector, "parkwatch_spool_full") == 1,
        timeout=WAIT_S,
        what="the spool full",
        collector=collector,
        context=lambda: f"spool bytes {metric(collector, 'parkwatch_spool_bytes')}",
    )
    wait_until(
        lambda: health_is(collector, 503, spool=False),
        timeout=WAIT_S,
        what="/healthz 503 with the spool check failing",
        collector=collector,
    )
    samples = collector.metrics()
    counts.update(
        published=publisher.published,
        accepted=publisher.accepted_count,
        line_bytes=per_line,
        spool_bytes_when_full=int(samples["parkwatch_spool_bytes"]),
        spooled_batches_when_full=int(samples["parkwatch_spooled_batches_total"]),
        unacked_when_full=int(samples["parkwatch_unacked_messages"]),
        received_when_full=int(samples["parkwatch_messages_received_total"]),
    )
    assert samples["parkwatch_unacked_messages"] > 0, "spool full but nothing left unacked"
    assert samples["parkwatch_spool_bytes"] <= MIB
    assert sum(v for k, v in samples.items() if k.startswith("parkwatch_dead_letters_total")) == 0

    own_influx.start()
    wait_for_points(own_influx, DATABASE, total, collector, base_ms=base_ms, upto=total)
    wait_until(
        lambda: (
            metric(collector, "parkwatch_spool_bytes") == 0
            and metric(collector, "parkwatch_spool_full") == 0
            and metric(collector, "parkwatch_unacked_messages") == 0
            and health_is(collector, 200, spool=True, sink=True)
        ),
        timeout=WAIT_S,
        what="the spool drained, everything acked, /healthz 200",
        collector=collector,
    )
    counts["replayed_points"] = int(metric(collector, "parkwatch_replayed_points_total"))
    assert_exactly_once(
        own_influx,
        DATABASE,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    assert_drains_on_sigterm(collector)


OVERSIZED_BATCH = 4096  # the collector's largest batch: receive_maximum (8192) // 2
STALL_S = 15.0  # a working collector writes the batch within a second or two of InfluxDB's return


def test_batch_larger_than_the_spool_is_written_once_influxdb_is_back(
    mosquitto: Mosquitto,
    own_influx: InfluxDB1,
    rig: Rig,
    counts: Counts,
) -> None:
    """A batch bigger than the whole spool (here 4096 lines of ~335 bytes for 1 MiB; reachable
    with a 1 MiB spool, the default batch size and lines over 256 bytes) must still reach
    InfluxDB once it is back: the spool refusing it is no reason to stop trying the database.
    """
    base_ms = first_number_ms()
    total = OVERSIZED_BATCH
    assert total * line_bytes(rig.topic_prefix, base_ms) > MIB
    collector = rig.collector(
        mosquitto,
        own_influx,
        DATABASE,
        PARKWATCH_SPOOL__MAX_BYTES=str(MIB),
        PARKWATCH_WRITER__BATCH_SIZE=str(OVERSIZED_BATCH),
        PARKWATCH_WRITER__FLUSH_INTERVAL_S="10",  # the batch is cut by size, as one
    )
    publisher = rig.publish_padded_while_influx_is_down(
        collector, mosquitto, own_influx, total, base_ms
    )
    wait_until(
        lambda: metric(collector, "parkwatch_spool_full") == 1,
        timeout=WAIT_S,
        what="the spool refusing the batch",
        collector=collector,
    )
    own_influx.start()
    try:
        wait_for_points(
            own_influx, DATABASE, total, collector, base_ms=base_ms, upto=total, timeout=STALL_S
        )
    finally:
        samples = collector.metrics()
        counts.update(
            published=publisher.published,
            accepted=publisher.accepted_count,
            points_in_influx=influx_count(own_influx, DATABASE),
            spool_bytes=int(samples["parkwatch_spool_bytes"]),
            spool_full=int(samples["parkwatch_spool_full"]),
            unacked=int(samples["parkwatch_unacked_messages"]),
            healthz=collector.health()[0],
        )
    assert_exactly_once(
        own_influx,
        DATABASE,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    assert_drains_on_sigterm(collector)


# -- 5. torn spool tail ----------------------------------------------------------------------


def tear_last_record(spool_dir: Path, base_ms: int) -> tuple[list[list[int]], str]:
    """Tear the newest spool record of a dead collector: cut 5 bytes off the last segment.

    Returns the numbers each pending record held (oldest record first, read with `Spool` before
    the damage) and the name of the torn segment.
    """
    records = read_spool(spool_dir)
    assert len(records) >= 2, f"only {len(records)} spool record(s); need one before the torn one"
    last = records[-1]
    segments = sorted(spool_dir.glob("*.seg"))
    assert last.segment == segments[-1], (last.segment, segments)
    size = last.segment.stat().st_size
    with last.segment.open("r+b") as f:
        f.truncate(size - 5)  # a torn write: the record's last bytes never reached the disk
    return [seqs_of_lines(record.payload, base_ms) for record in records], last.segment.name


def test_torn_spool_tail_loses_only_the_torn_record(
    mosquitto: Mosquitto,
    own_influx: InfluxDB1,
    rig: Rig,
    counts: Counts,
) -> None:
    """A crash, then the spool's last segment loses its last bytes (a torn write): after the
    restart every record before the torn one is replayed, the messages still unacked at the
    broker arrive, and the torn record's numbers are the only ones missing (they had been acked:
    the spool's documented limit); the corruption is reported in the log, naming the segment.

    Phase 1 is spooled and fully acked (``parkwatch_unacked_messages`` 0). Then the collector
    is frozen (SIGSTOP) so that phase 2 reaches the broker but can be neither spooled nor acked,
    and killed (SIGKILL): the spool holds exactly phase 1 and the broker holds phase 2.
    """
    phase1, phase2 = scaled(1500), scaled(500)
    total = phase1 + phase2
    base_ms = first_number_ms()
    own_influx.stop()
    collector = rig.collector(
        mosquitto,
        own_influx,
        DATABASE,
        PARKWATCH_WRITER__BATCH_SIZE="100",
        PARKWATCH_SPOOL__SEGMENT_BYTES=str(64 * 1024),
    )
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.start_stream(numbered_stream(rig.topic_prefix, range(phase1), base_ms), rate=3000)
    publisher.join_stream()
    publisher.wait_accepted(phase1)

    def phase1_acked() -> bool:
        samples = collector.metrics()
        received = samples["parkwatch_messages_received_total"]
        return received >= phase1 and samples["parkwatch_unacked_messages"] == 0

    wait_until(phase1_acked, timeout=WAIT_S, what="phase 1 spooled and acked", collector=collector)
    # The gauge drops when the acks are queued; paho writes them on the loop's next turn. A
    # second scrape is served on a later turn, so by then the PUBACKs are on the wire.
    assert phase1_acked()
    spooled_batches = int(metric(collector, "parkwatch_spooled_batches_total"))
    collector.freeze()
    publisher.publish_many(numbered_stream(rig.topic_prefix, range(phase1, total), base_ms))
    publisher.wait_accepted(total)
    collector.kill()

    spooled, torn_segment = tear_last_record(collector.spool_dir, base_ms)
    assert sorted(s for seqs in spooled for s in seqs) == list(range(phase1)), (
        "the spool should have held exactly phase 1 (spooled and acked before the freeze)"
    )
    torn = set(spooled[-1])
    counts.update(
        published=publisher.published,
        accepted=publisher.accepted_count,
        spooled_batches=spooled_batches,
        spool_records=len(spooled),
        spool_segments=len(list(collector.spool_dir.glob("*.seg"))),
        torn_record_lines=len(torn),
        torn_segment=torn_segment,
    )

    own_influx.start()
    collector.start()
    collector.wait_subscribed()
    expected = set(range(total)) - torn
    wait_for_points(own_influx, DATABASE, len(expected), collector, base_ms=base_ms, upto=total)
    wait_until(
        lambda: (
            metric(collector, "parkwatch_spool_bytes") == 0
            and metric(collector, "parkwatch_messages_received_total") >= phase2
            and metric(collector, "parkwatch_unacked_messages") == 0
        ),
        timeout=WAIT_S,
        what="spool replayed and phase 2 redelivered and acked",
        collector=collector,
    )
    replayed = int(metric(collector, "parkwatch_replayed_points_total"))
    counts["replayed_points"] = replayed
    counts["redelivered"] = int(metric(collector, "parkwatch_messages_received_total"))
    assert_exactly_once(
        own_influx, DATABASE, base_ms, expected, upto=total, collector=collector, counts=counts
    )
    assert replayed >= sum(len(seqs) for seqs in spooled[:-1])
    log = collector.log_text()
    reports = [line for line in log.splitlines() if "WARNING" in line and torn_segment in line]
    assert reports, f"no warning naming {torn_segment}\n{collector.log_tail()}"
    counts["corruption_report"] = reports[0][-160:]
    assert_drains_on_sigterm(collector)


# -- 6. fuzz ---------------------------------------------------------------------------------

KINDS = ("microgrid", "storage", "site5g", "charger")
CHANNELS = ("telemetry", "status")
MICROGRID_FLOATS = (
    "pv_kw",
    "load_kw",
    "grid_import_kw",
    "grid_export_kw",
    "pv_kwh",
    "load_kwh",
    "grid_import_kwh",
    "grid_export_kwh",
    "frequency_hz",
)
ALLOWED_REASONS = frozenset(
    {
        Reason.INVALID_JSON,
        Reason.INVALID_PAYLOAD,
        Reason.NON_FINITE,
        Reason.UNKNOWN_KIND,
        Reason.INVALID_TOPIC,
        Reason.TOO_LARGE,
        Reason.CLOCK_SKEW,
    }
)
FUZZ_BAD = scaled(10_000)  # bad messages at least
FUZZ_BATCH = (90, 110)  # bad messages per example (min, max)
MAX_PAYLOAD = 64 * 1024
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Bad:
    """A message the collector must dead-letter, with the reasons it may give."""

    kind: str  # the corpus class, for the counts
    topic: str
    payload: bytes
    reasons: frozenset[str]


def _mqtt_topic_char(char: str) -> bool:
    """Mosquitto refuses Unicode noncharacters in topics (and disconnects the sender)."""
    code = ord(char)
    return not (0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE)


# A topic level Mosquitto and paho accept: UTF-8 without controls, '/', '+', '#' or NUL.
LEVEL = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/+#").filter(
        _mqtt_topic_char
    ),
    max_size=10,
)
# A park or device id the collector accepts: printable, no backslash, no surrounding space.
VALID_ID = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S"), exclude_characters="/+#\\"),
    min_size=1,
    max_size=10,
)
# What makes an id invalid: surrounding or inner (non-ASCII) space, backslash, format
# characters, line separators, or more than 128 characters.
SPACES = st.sampled_from([" ", "\u00a0", "\u2003", "\u3000"])
INNER = st.sampled_from(["\\", "\u00a0", "\u3000", "\u200b", "\u200e", "\ufeff", "\u2028"])


def _insert(text: str, char: str, at: int) -> str:
    at %= len(text) + 1
    return text[:at] + char + text[at:]


BAD_ID = st.one_of(
    st.builds(lambda s, w: w + s, VALID_ID, SPACES),
    st.builds(lambda s, w: s + w, VALID_ID, SPACES),
    st.builds(_insert, VALID_ID, INNER, st.integers(0, 20)),
    st.builds(lambda s, extra: (s * 200)[: 129 + extra], VALID_ID, st.integers(0, 20)),
)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31), st.text(max_size=6))
WRONG_VALUE = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.lists(JSON_SCALAR, max_size=3),
    st.dictionaries(st.text(max_size=4), JSON_SCALAR, max_size=2),
)
FIELD_NAME = st.one_of(
    st.sampled_from(MICROGRID_FLOATS),
    st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(lambda s: s != "ts"),
)


def corpus(prefix: str, ts_ms: int) -> st.SearchStrategy[Bad]:
    """Bad messages by construction, one strategy per class (see each ``reasons``)."""
    good_payload = orjson.dumps({"ts": ts_ms, "pv_kw": 1.0})

    def topic(park: str, kind: str, device: str, channel: str = "telemetry") -> str:
        return f"{prefix}/{park}/{kind}/{device}/{channel}"

    microgrid = st.builds(lambda p, d: topic(p, "microgrid", d), VALID_ID, VALID_ID)
    any_kind = st.builds(topic, VALID_ID, st.sampled_from(KINDS), VALID_ID)

    def bad(kind: str, *reasons: str) -> Callable[[str, bytes], Bad]:
        return lambda t, p: Bad(kind, t, p, frozenset(reasons))

    def too_large(size: int) -> bytes:
        head = b'{"ts": %d, "pv_kw": 1.0, "pad": "' % ts_ms
        return head + b"x" * (size - len(head) - 2) + b'"}'

    def non_finite(name: str, token: bytes) -> bytes:
        return b'{"ts": %d, %s: %s}' % (ts_ms, orjson.dumps(name), token)

    bad_payloads = [
        st.builds(
            bad("not_json_object", Reason.INVALID_JSON, Reason.INVALID_PAYLOAD),
            any_kind,
            st.binary(max_size=40).filter(lambda b: not b.lstrip().startswith(b"{")),
        ),
        st.builds(
            bad("wrong_field_type", Reason.INVALID_PAYLOAD),
            microgrid,
            st.builds(
                lambda name, value: orjson.dumps({"ts": ts_ms, name: value}),
                st.sampled_from(MICROGRID_FLOATS),
                WRONG_VALUE,
            ),
        ),
        st.builds(
            # A text ts that happens to be RFC 3339 with an offset would be clock skew instead.
            bad("wrong_ts_type", Reason.INVALID_PAYLOAD, Reason.CLOCK_SKEW),
            microgrid,
            st.one_of(
                st.booleans(),
                st.text(max_size=8),
                st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
                st.integers(min_value=-(2**63), max_value=-1),
                st.integers(min_value=10**14, max_value=2**62),
                st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
            ).map(lambda ts: orjson.dumps({"ts": ts, "pv_kw": 1.0})),
        ),
        st.builds(
            bad("non_finite", Reason.NON_FINITE),
            microgrid,
            st.builds(non_finite, FIELD_NAME, st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])),
        ),
        st.builds(
            bad("missing_ts", Reason.INVALID_PAYLOAD),
            microgrid,
            st.dictionaries(
                st.sampled_from(MICROGRID_FLOATS),
                st.floats(allow_nan=False, allow_infinity=False),
                max_size=3,
            ).map(orjson.dumps),
        ),
        st.builds(
            bad("clock_skew", Reason.CLOCK_SKEW),
            microgrid,
            st.one_of(
                st.integers(ts_ms + 10 * 60_000, 10**14 - 1),  # limit: 300 s ahead
                st.integers(0, ts_ms - 32 * DAY_MS),  # limit: 30 days behind
            ).map(lambda ts: orjson.dumps({"ts": ts, "pv_kw": 1.0})),
        ),
        st.builds(
            bad("too_large", Reason.TOO_LARGE),
            any_kind,
            st.integers(MAX_PAYLOAD + 1, MAX_PAYLOAD + 4096).map(too_large),
        ),
    ]
    bad_topics = [
        st.builds(
            lambda levels: Bad(
                "wrong_depth",
                "/".join([prefix, *levels]),
                good_payload,
                frozenset({Reason.INVALID_TOPIC}),
            ),
            st.lists(LEVEL, max_size=7).filter(lambda levels: len(levels) != 4),
        ),
        st.builds(
            lambda park, kind, device, channel: Bad(
                "unknown_kind",
                topic(park, kind, device, channel),
                good_payload,
                frozenset({Reason.UNKNOWN_KIND}),
            ),
            VALID_ID,
            LEVEL.filter(lambda k: k not in KINDS),
            VALID_ID,
            st.sampled_from(CHANNELS),
        ),
        st.builds(
            lambda park, kind, device, channel: Bad(
                "unknown_channel",
                topic(park, kind, device, channel),
                good_payload,
                frozenset({Reason.INVALID_TOPIC}),
            ),
            VALID_ID,
            st.sampled_from(KINDS),
            VALID_ID,
            LEVEL.filter(lambda c: c not in CHANNELS),
        ),
        st.builds(
            lambda bad_id, good_id, kind, park_is_bad: Bad(
                "bad_id",
                topic(bad_id, kind, good_id) if park_is_bad else topic(good_id, kind, bad_id),
                good_payload,
                frozenset({Reason.INVALID_TOPIC}),
            ),
            BAD_ID,
            VALID_ID,
            st.sampled_from(KINDS),
            st.booleans(),
        ),
    ]
    return st.one_of(*bad_payloads, *bad_topics)


@dataclass
class FuzzLedger:
    """What the fuzz test sent, to compare with the dead-letter file and InfluxDB."""

    expected: Counter[tuple[str, bytes]] = field(default_factory=Counter)
    reasons: dict[tuple[str, bytes], set[str]] = field(default_factory=dict)
    classes: Counter[str] = field(default_factory=Counter)
    bad: int = 0
    good: int = 0
    examples: int = 0

    def add(self, message: Bad) -> None:
        """Count a bad message under the key its dead-letter record will have."""
        key = (message.topic, message.payload[:4096])  # the record keeps 4096 bytes at most
        self.expected[key] += 1
        self.reasons.setdefault(key, set()).update(message.reasons)
        self.classes[message.kind] += 1
        self.bad += 1


def dead_letter_records(path: Path) -> list[dict[str, object]]:
    """Every record in the dead-letter file and its rotated backups."""
    paths = [path, *sorted(path.parent.glob(f"{path.name}.*"))]
    return [
        orjson.loads(line)
        for p in paths
        if p.exists()
        for line in p.read_bytes().splitlines()
        if line
    ]


def record_key(record: dict[str, object]) -> tuple[str, bytes]:
    """``(topic, payload prefix)`` of a dead-letter record, as `FuzzLedger.add` keys them."""
    if "payload" in record:
        payload = str(record["payload"]).encode()
    else:
        payload = base64.b64decode(str(record["payload_base64"]))
    return str(record["topic"]), payload


def test_fuzzed_bad_input_is_dead_lettered_and_never_stops_the_collector(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """10 000+ hypothesis-generated bad payloads and odd topics mixed with good numbered
    messages, into one collector: every bad one is dead-lettered exactly once with a reason its
    class allows, every good one is stored exactly once, the process never exits and is healthy.
    """
    prefix = rig.topic_prefix
    base_ms = first_number_ms()
    collector = rig.collector(
        mosquitto, influxdb, influx_database, PARKWATCH_WRITER__FLUSH_INTERVAL_S="0.05"
    )
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    ledger = FuzzLedger()
    examples = math.ceil(FUZZ_BAD / FUZZ_BATCH[0]) + 1
    batch = st.tuples(
        st.lists(corpus(prefix, now_ms()), min_size=FUZZ_BATCH[0], max_size=FUZZ_BATCH[1]),
        st.lists(st.integers(0, FUZZ_BATCH[1]), max_size=12),  # where good messages go
    )

    def totals() -> tuple[float, float, float]:
        samples = collector.metrics()
        dead = sum(v for k, v in samples.items() if k.startswith("parkwatch_dead_letters_total{"))
        return (
            samples["parkwatch_messages_received_total"],
            dead,
            samples["parkwatch_points_written_total"],
        )

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking against a live collector
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )
    @given(example=batch)
    def publish_example(example: tuple[list[Bad], list[int]]) -> None:
        bads, good_at = example
        received, dead, written = totals()
        messages: list[tuple[int, str, bytes]] = []
        goods = sorted(good_at)
        for n, message in enumerate(bads):
            while goods and goods[0] <= n:
                goods.pop(0)
                topic, payload = numbered_message(prefix, ledger.good, base_ms)
                messages.append((ledger.good, topic, payload))
                ledger.good += 1
            messages.append((-1 - ledger.bad, message.topic, message.payload))
            ledger.add(message)
        publisher.publish_many(messages)
        publisher.wait_accepted(publisher.published)
        ledger.examples += 1
        n_good = len(good_at) - len(goods)
        wait_until(
            lambda: all(
                now >= then + n
                for now, then, n in zip(
                    totals(),
                    (received, dead, written),
                    (len(messages), len(bads), n_good),
                    strict=True,
                )
            ),
            timeout=WAIT_S,
            what=f"example {ledger.examples}: {len(bads)} dead letters, {n_good} points",
            collector=collector,
        )

    publish_example()

    wait_until(
        lambda: health_is(collector, 200),
        timeout=WAIT_S,
        what="/healthz 200 after the fuzz",
        collector=collector,
    )
    assert collector.returncode is None
    records = dead_letter_records(collector.deadletter_path)
    found = Counter(record_key(r) for r in records)
    reasons = Counter(str(r["reason"]) for r in records)
    counts.update(
        examples=ledger.examples,
        bad_published=ledger.bad,
        good_published=ledger.good,
        dead_letter_lines=len(records),
        reasons=dict(sorted(reasons.items())),
        classes=dict(sorted(ledger.classes.items())),
        publisher_disconnects=publisher.disconnects,
    )
    assert ledger.bad >= FUZZ_BAD, f"only {ledger.bad} bad messages generated"
    assert set(reasons) <= ALLOWED_REASONS, reasons
    missing = ledger.expected - found
    extra = found - ledger.expected
    assert not missing, (
        f"{sum(missing.values())} bad messages not dead-lettered: {list(missing)[:5]}"
    )
    assert not extra, f"{sum(extra.values())} unexpected dead letters: {list(extra)[:5]}"
    wrong = [
        (r["reason"], r["topic"], r["detail"])
        for r in records
        if str(r["reason"]) not in ledger.reasons[record_key(r)]
    ]
    assert not wrong, f"{len(wrong)} dead letters with a reason their class excludes: {wrong[:10]}"
    assert all(r["detail"] for r in records), "a dead letter without detail"
    wait_for_points(
        influxdb, influx_database, ledger.good, collector, base_ms=base_ms, upto=ledger.good
    )
    assert_exactly_once(
        influxdb,
        influx_database,
        base_ms,
        set(range(ledger.good)),
        upto=ledger.good,
        collector=collector,
        counts=counts,
    )
    assert publisher.disconnects == 0, "the broker dropped the publisher (an invalid topic?)"
    assert_drains_on_sigterm(collector)


# -- 8. the spool's disk full ------------------------------------------------------------------

DISK = 512 * 1024  # the tmpfs under the spool; spool.max_bytes stays at its 1 GiB default


def test_full_spool_disk_stops_acking_survives_restarts_and_recovers(
    mosquitto: Mosquitto,
    own_influx: InfluxDB1,
    rig: Rig,
    counts: Counts,
    tmp_path: Path,
) -> None:
    """InfluxDB down and the spool on a 512 KiB filesystem that fills (ENOSPC) long before
    ``spool.max_bytes``: the collector stops acking (health 503 on the spool check, messages
    left unacked) but keeps running, also across a ``kill -9`` and restart with the disk still
    full (its spool gauges show the pending data at once); once InfluxDB is back every accepted
    number is stored exactly once and the spool drains.
    """
    base_ms = first_number_ms()
    per_line = line_bytes(rig.topic_prefix, base_ms)
    total = max(scaled(2500), math.ceil(2 * DISK / per_line))
    with small_disk(tmp_path / "disk", f"{DISK // 1024}k") as disk:
        collector = rig.collector(
            mosquitto, own_influx, DATABASE, PARKWATCH_SPOOL__DIRECTORY=str(disk / "spool")
        )
        publisher = rig.publish_padded_while_influx_is_down(
            collector, mosquitto, own_influx, total, base_ms
        )

        def refusing(collector: CollectorProcess) -> bool:
            return (
                collector.metric("parkwatch_spool_errors_total", op="append") >= 1
                and metric(collector, "parkwatch_spool_full") == 1
                and health_is(collector, 503, spool=False)
            )

        wait_until(
            lambda: refusing(collector),
            timeout=WAIT_S,
            what="the disk full: spool errors, spool_full 1, /healthz 503 on the spool check",
            collector=collector,
        )
        samples = collector.metrics()
        counts.update(
            published=publisher.published,
            accepted=publisher.accepted_count,
            line_bytes=per_line,
            spool_bytes_when_disk_full=int(samples["parkwatch_spool_bytes"]),
            unacked_when_disk_full=int(samples["parkwatch_unacked_messages"]),
            spool_detail=collector.health()[1]["checks"]["spool"]["detail"],
        )
        assert samples["parkwatch_unacked_messages"] > 0, "disk full but nothing left unacked"
        assert "No space left on device" in str(counts["spool_detail"])

        collector.kill()  # a restart finds the disk as full as it was
        collector.start()
        pending = metric(collector, "parkwatch_spool_bytes")
        counts["spool_bytes_right_after_restart"] = int(pending)
        assert pending > 0, "spool gauges read 0 after a restart while data is pending"
        wait_until(
            lambda: refusing(collector),
            timeout=WAIT_S,
            what="after the restart: still refusing, still running",
            collector=collector,
        )

        own_influx.start()
        wait_for_points(own_influx, DATABASE, total, collector, base_ms=base_ms, upto=total)
        wait_until(
            lambda: (
                metric(collector, "parkwatch_spool_bytes") == 0
                and metric(collector, "parkwatch_unacked_messages") == 0
                and health_is(collector, 200, spool=True, sink=True)
            ),
            timeout=WAIT_S,
            what="the spool drained, everything acked, /healthz 200",
            collector=collector,
        )
        counts["replayed_points_after_restart"] = int(
            metric(collector, "parkwatch_replayed_points_total")
        )
        assert_exactly_once(
            own_influx,
            DATABASE,
            base_ms,
            set(range(total)),
            upto=total,
            collector=collector,
            counts=counts,
        )
        assert "Traceback" not in collector.log_text()
        assert_drains_on_sigterm(collector)


# -- 9. the database dropped, a retention policy mistyped ---------------------------------------


def stored_once(influx: InfluxDB1, database: str, base_ms: int, upto: int) -> Counter[int]:
    """How often each number is stored."""
    return Counter(influx_seqs(influx, database, base_ms, upto))


def test_database_dropped_under_load_is_created_again_and_the_data_arrives(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """``DROP DATABASE`` while messages flow: the collector creates it again at the next write
    (``influx.create_database``, on by default) and every number published after the drop is
    stored exactly once (those written before it went with the database)."""
    total = scaled(3000)
    base_ms = first_number_ms()
    collector = rig.collector(mosquitto, influxdb, influx_database)
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.start_stream(numbered_stream(rig.topic_prefix, range(total), base_ms), rate=RATE)
    wait_until(
        lambda: (
            publisher.accepted_count >= total // 3 and influx_count(influxdb, influx_database) > 0
        ),
        timeout=WAIT_S,
        what="a third of the stream published and points in InfluxDB",
        collector=collector,
    )
    influxdb.drop_database(influx_database)
    after_drop = publisher.published  # these were all published once the database was gone
    publisher.join_stream()
    publisher.wait_accepted(total)
    expected = set(range(after_drop, total))
    wait_until(
        lambda: expected <= stored_once(influxdb, influx_database, base_ms, total).keys(),
        timeout=WAIT_S,
        what=f"the {len(expected)} numbers published after the drop in InfluxDB",
        collector=collector,
    )
    stored = stored_once(influxdb, influx_database, base_ms, total)
    counts.update(
        published=total,
        published_after_drop=len(expected),
        stored=sum(stored.values()),
        database_not_found=int(
            collector.metric("parkwatch_write_errors_total", kind="database_not_found")
        ),
    )
    assert set(stored) <= set(range(total))
    assert [seq for seq, n in stored.items() if n > 1] == []
    assert "created it again" in collector.log_text()
    assert health_is(collector, 200, sink=True)
    assert_drains_on_sigterm(collector)


def test_database_dropped_without_create_database_is_reported_until_it_is_created(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """With ``influx.create_database`` off, a dropped database is loud: /healthz 503 on the sink
    check while InfluxDB still answers its ping, an ERROR line again and again, a metric; the
    data is spooled, and written once an operator creates the database."""
    base_ms = first_number_ms()
    first, total = 200, scaled(1000)
    collector = rig.collector(
        mosquitto,
        influxdb,
        influx_database,
        PARKWATCH_INFLUX__CREATE_DATABASE="false",
        PARKWATCH_WRITER__FAILURE_LOG_INTERVAL_S="0.3",
    )
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.publish_many(numbered_stream(rig.topic_prefix, range(first), base_ms))
    wait_for_points(influxdb, influx_database, first, collector, base_ms=base_ms, upto=first)
    influxdb.drop_database(influx_database)
    publisher.publish_many(numbered_stream(rig.topic_prefix, range(first, total), base_ms))
    publisher.wait_accepted(total)

    def reported() -> bool:
        _, body = collector.health()
        sink = body["checks"]["sink"]
        errors = collector.log_text().count("failing for")
        missing = f"database {influx_database!r} (influx.database) does not exist"
        return not sink["ok"] and missing in sink["detail"] and errors >= 3

    wait_until(
        lambda: reported() and health_is(collector, 503, sink=False),
        timeout=WAIT_S,
        what="/healthz 503 naming the missing database, and the error repeated in the log",
        collector=collector,
    )
    samples = collector.metrics()
    counts.update(
        sink_detail=collector.health()[1]["checks"]["sink"]["detail"],
        error_lines=collector.log_text().count("failing for"),
        database_not_found=int(samples['parkwatch_write_errors_total{kind="database_not_found"}']),
        spooled_batches=int(samples["parkwatch_spooled_batches_total"]),
    )
    assert samples["parkwatch_spooled_batches_total"] >= 1  # kept, not lost
    assert samples["parkwatch_writes_failing_seconds"] > 0

    influxdb.create_database(influx_database)
    expected = set(range(first, total))
    wait_until(
        lambda: expected <= stored_once(influxdb, influx_database, base_ms, total).keys(),
        timeout=WAIT_S,
        what="the numbers published after the drop in InfluxDB",
        collector=collector,
    )
    assert_exactly_once(
        influxdb, influx_database, base_ms, expected, upto=total, collector=collector, counts=counts
    )
    wait_until(
        lambda: health_is(collector, 200, sink=True),
        timeout=WAIT_S,
        what="/healthz 200 once the database exists again",
        collector=collector,
    )
    assert_drains_on_sigterm(collector)


def test_mistyped_retention_policy_is_a_clear_error_and_health_503_until_it_exists(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """``influx.retention_policy`` names a policy the database does not have: a clear ERROR at
    start naming the setting and the policies that exist, /healthz 503 on the sink check (before
    any data, and while data is spooled); written once the policy exists."""
    total = scaled(500)
    base_ms = first_number_ms()
    collector = rig.collector(
        mosquitto, influxdb, influx_database, PARKWATCH_INFLUX__RETENTION_POLICY="autogne"
    )
    collector.start()
    clear = (
        f"retention policy 'autogne' (influx.retention_policy) does not exist on database "
        f"{influx_database!r}; it has autogen"
    )
    wait_until(
        lambda: clear in collector.log_text() and health_is(collector, 503, sink=False),
        timeout=WAIT_S,
        what="the clear error at start and /healthz 503 on the sink check",
        collector=collector,
    )
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.publish_many(numbered_stream(rig.topic_prefix, range(total), base_ms))
    publisher.wait_accepted(total)
    wait_until(
        lambda: (
            collector.metric("parkwatch_write_errors_total", kind="retention_policy_not_found") >= 1
            and metric(collector, "parkwatch_spooled_batches_total") >= 1
            and health_is(collector, 503, sink=False)
        ),
        timeout=WAIT_S,
        what="writes failing on the missing policy, data spooled, /healthz still 503",
        collector=collector,
    )
    counts.update(
        sink_detail=collector.health()[1]["checks"]["sink"]["detail"],
        accepted=publisher.accepted_count,
    )
    influxdb.query(
        influx_database,
        f'CREATE RETENTION POLICY "autogne" ON "{influx_database}" DURATION INF REPLICATION 1 '
        "DEFAULT",  # the default, so the checks below read it
    )
    wait_for_points(influxdb, influx_database, total, collector, base_ms=base_ms, upto=total)
    assert_exactly_once(
        influxdb,
        influx_database,
        base_ms,
        set(range(total)),
        upto=total,
        collector=collector,
        counts=counts,
    )
    wait_until(
        lambda: health_is(collector, 200, sink=True),
        timeout=WAIT_S,
        what="/healthz 200 once the policy exists",
        collector=collector,
    )
    assert_drains_on_sigterm(collector)


# -- 10. lines InfluxDB refuses ------------------------------------------------------------------


def dead_letter_seqs(collector: CollectorProcess, base_ms: int) -> Counter[tuple[str, int]]:
    """``(reason, number)`` of every dead-lettered line (read from its timestamp)."""
    return Counter(
        (str(record["reason"]), seq)
        for record in dead_letter_records(collector.deadletter_path)
        for seq in seqs_of_lines(str(record["payload"]).encode(), base_ms)
    )


def request_counts(collector: CollectorProcess) -> dict[str, int]:
    """Write requests sent, written (204) and refused (400), from the collector's metrics."""
    samples = collector.metrics()
    return {
        "requests": int(samples["parkwatch_write_requests_total"]),
        "written": int(samples["parkwatch_write_duration_seconds_count"]),
        "refused": int(samples['parkwatch_write_errors_total{kind="rejected"}']),
    }


def test_a_partly_bad_batch_is_written_except_its_bad_lines_against_real_influxdb(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """Real InfluxDB 1.x stores the good lines of a partly bad batch and still answers 400. A
    batch with a field-type-conflicting line and a line older than the retention policy: the
    good points are stored exactly once, the two bad ones dead-lettered as ``rejected_by_sink``
    (the conflict through the learnt type, the other through bisection)."""
    total, conflicting, too_old = 100, 37, 71
    base_ms = first_number_ms()
    influxdb.query(
        influx_database,
        f'CREATE RETENTION POLICY "hour" ON "{influx_database}" DURATION 1h REPLICATION 1 DEFAULT',
    )
    collector = rig.collector(
        mosquitto, influxdb, influx_database, PARKWATCH_WRITER__FLUSH_INTERVAL_S="1"
    )
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.publish_many(
        numbered_stream(rig.topic_prefix, [0], base_ms, extra=lambda i: {"mode": 0.5})
    )
    wait_for_points(influxdb, influx_database, 1, collector, base_ms=base_ms, upto=1)

    def message(i: int) -> tuple[int, str, bytes]:
        extra: dict[str, object] = {"mode": i % 7 + 0.5}
        if i == conflicting:
            extra["mode"] = True  # the database holds a float
        # 2 h old: inside the collector's clock-skew window, outside the 1 h policy.
        ts = base_ms + i - 7_200_000 if i == too_old else base_ms + i
        topic, payload = numbered_message(rig.topic_prefix, i, base_ms, extra=extra)
        return i, topic, orjson.dumps({**orjson.loads(payload), "ts": ts})

    publisher.publish_many(message(i) for i in range(1, total))
    publisher.wait_accepted(total)
    good = set(range(total)) - {conflicting, too_old}
    wait_until(
        lambda: len(dead_letter_seqs(collector, base_ms)) == 2,
        timeout=WAIT_S,
        what="two dead letters",
        collector=collector,
    )
    wait_for_points(influxdb, influx_database, len(good), collector, base_ms=base_ms, upto=total)
    dead = dead_letter_seqs(collector, base_ms)
    counts.update(dead_letters=dict(dead), **request_counts(collector))
    assert dead == Counter(
        {
            (Reason.REJECTED_BY_SINK, conflicting): 1,
            (Reason.REJECTED_BY_SINK, too_old - 7_200_000): 1,
        }
    )
    assert_exactly_once(
        influxdb, influx_database, base_ms, good, upto=total, collector=collector, counts=counts
    )
    assert collector.metric("parkwatch_dead_letters_total", reason=Reason.REJECTED_BY_SINK) == 2
    assert_drains_on_sigterm(collector)


CONFLICT_EVERY = 10  # one message in ten gives the field another type


def test_field_type_conflicts_cost_no_write_request_per_message(
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    rig: Rig,
    counts: Counts,
) -> None:
    """10 % of the messages give field ``mode`` another type than InfluxDB holds. Once the
    first refusal has taught the writer the type, conflicting lines are dead-lettered before the
    write: at most one refused request per worker in all (bisection, before, made one or more
    per conflicting message), every good number stored once, every conflicting one
    dead-lettered once."""
    total = scaled(3000)
    base_ms = first_number_ms()
    collector = rig.collector(mosquitto, influxdb, influx_database)
    collector.start()
    collector.wait_subscribed()
    publisher = rig.publisher(mosquitto)
    publisher.publish_many(
        numbered_stream(rig.topic_prefix, [0], base_ms, extra=lambda i: {"mode": 0.5})
    )
    wait_for_points(influxdb, influx_database, 1, collector, base_ms=base_ms, upto=1)

    def mode(i: int) -> dict[str, object]:
        return {"mode": True if i % CONFLICT_EVERY == 0 else i % 7 + 0.5}

    publisher.publish_many(numbered_stream(rig.topic_prefix, range(1, total), base_ms, extra=mode))
    publisher.wait_accepted(total)
    conflicting = {i for i in range(1, total) if i % CONFLICT_EVERY == 0}
    good = set(range(total)) - conflicting
    wait_for_points(influxdb, influx_database, len(good), collector, base_ms=base_ms, upto=total)
    wait_until(
        lambda: len(dead_letter_seqs(collector, base_ms)) >= len(conflicting),
        timeout=WAIT_S,
        what=f"{len(conflicting)} dead letters",
        collector=collector,
    )
    requests = request_counts(collector)
    counts.update(conflicting=len(conflicting), **requests)
    assert dead_letter_seqs(collector, base_ms) == Counter(
        {(Reason.REJECTED_BY_SINK, i): 1 for i in conflicting}
    )
    assert_exactly_once(
        influxdb, influx_database, base_ms, good, upto=total, collector=collector, counts=counts
    )
    # Both workers may meet the conflict before either has learnt from it: two, at most.
    assert requests["refused"] <= 2, requests
    assert requests["requests"] == requests["written"] + requests["refused"], requests
    assert_drains_on_sigterm(collector)


SERIES_DEVICES, ALLOWED_DEVICES = 48, 32  # max-values-per-tag = 32: devices m32..m47 refused


def test_devices_beyond_a_series_limit_are_dead_lettered_as_series_limit_once_learnt(
    mosquitto: Mosquitto,
    rig: Rig,
    counts: Counts,
    tmp_path: Path,
) -> None:
    """InfluxDB with ``max-values-per-tag = 32`` and 48 devices: the 16 new ones are refused.
    Their messages are dead-lettered with reason ``series_limit`` and an operator hint in the
    log; once learnt, a device's later messages cost no write request (before: bisection on
    every batch, a request or more per message)."""
    options = {"max-values-per-tag": ALLOWED_DEVICES}
    with InfluxDB1(tmp_path / "influxdb", data_options=options) as influx:
        influx.create_database(DATABASE)
        base_ms = first_number_ms()
        rounds = scaled(20)
        learn_until = ALLOWED_DEVICES + SERIES_DEVICES * rounds
        total = learn_until + SERIES_DEVICES * rounds
        collector = rig.collector(mosquitto, influx, DATABASE)
        collector.start()
        collector.wait_subscribed()
        publisher = rig.publisher(mosquitto)

        def stream(numbers: range) -> None:
            publisher.publish_many(
                numbered_stream(rig.topic_prefix, numbers, base_ms, devices=SERIES_DEVICES)
            )
            publisher.wait_accepted(numbers.stop)

        def refused(i: int) -> bool:
            return i % SERIES_DEVICES >= ALLOWED_DEVICES

        def settled(upto: int) -> None:
            good = sum(not refused(i) for i in range(upto))
            wait_for_points(influx, DATABASE, good, collector, base_ms=base_ms, upto=upto)
            wait_until(
                lambda: (
                    len(dead_letter_seqs(collector, base_ms)) == upto - good
                    and metric(collector, "parkwatch_unacked_messages") == 0
                ),
                timeout=WAIT_S,
                what=f"{upto - good} dead letters, everything acked",
                collector=collector,
            )

        stream(range(ALLOWED_DEVICES))  # m0..m31 take the 32 tag values, in this order
        settled(ALLOWED_DEVICES)
        stream(range(ALLOWED_DEVICES, learn_until))
        settled(learn_until)
        learning = request_counts(collector)
        stream(range(learn_until, total))
        settled(total)
        learnt = request_counts(collector)
        after = {key: learnt[key] - learning[key] for key in learnt}
        counts.update(
            messages=total,
            refused_messages=sum(map(refused, range(total))),
            requests_while_learning=learning,
            requests_once_learnt=after,
        )
        assert after["refused"] == 0, after  # every refused device was remembered
        expected_dead = Counter({(Reason.SERIES_LIMIT, i): 1 for i in range(total) if refused(i)})
        assert dead_letter_seqs(collector, base_ms) == expected_dead
        assert_exactly_once(
            influx,
            DATABASE,
            base_ms,
            {i for i in range(total) if not refused(i)},
            upto=total,
            collector=collector,
            counts=counts,
        )
        assert "max-values-per-tag" in collector.log_text()
        assert "influxdb.conf" in collector.log_text()  # the operator hint
        assert_drains_on_sigterm(collector)
