"""Retained messages are state: handled once, then skipped at every later subscription.

The ledger alone (durable, bounded, torn tails), then four starts of a real collector against a
Mosquitto holding retained last wills and retained bad payloads.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import orjson
import pytest

from collector.metrics import Metrics
from collector.retained import COMPACT_SLACK, RetainedFilter, RetainedLedger, retained_key
from parkwatch.localservers import InfluxDB1, Mosquitto
from tests.helpers import (
    broker_saw_disconnects,
    collector_settings,
    publish_all,
    running_collector,
    until,
)


def key(n: int, payload: bytes = b"offline") -> tuple[int, int]:
    """The ledger key of retained message ``payload`` on device ``n``'s status topic."""
    return retained_key(f"parks/p/storage/b-{n}/status".encode(), payload)


def test_a_recorded_message_is_seen_after_reloading_and_a_changed_payload_is_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "retained.bin"
    ledger = RetainedLedger(path, max_topics=100)
    ledger.append([key(1), key(2)])
    ledger.remember([key(1), key(2)])

    reloaded = RetainedLedger(path, max_topics=100)
    reloaded.load()
    assert reloaded.seen(key(1))
    assert reloaded.seen(key(2))
    assert not reloaded.seen(key(1, b"online"))  # a new state of the same topic
    assert not reloaded.seen(key(3))
    # The newest payload of a topic replaces the older one.
    reloaded.append([key(1, b"online")])
    reloaded.remember([key(1, b"online")])
    again = RetainedLedger(path, max_topics=100)
    again.load()
    assert again.seen(key(1, b"online"))
    assert not again.seen(key(1))


def test_a_missing_file_is_an_empty_ledger(tmp_path: Path) -> None:
    ledger = RetainedLedger(tmp_path / "none.bin", max_topics=10)
    ledger.load()
    assert len(ledger) == 0
    assert not (tmp_path / "none.bin").exists()


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_a_torn_or_corrupt_record_is_skipped_and_the_file_repaired(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "retained.bin"
    ledger = RetainedLedger(path, max_topics=100)
    ledger.append([key(n) for n in range(5)])
    data = bytearray(path.read_bytes())
    if damage == "torn":
        data += data[:7]  # a crash mid-append
    else:
        data[2 * 20 + 3] ^= 0xFF  # one bit-rotten byte in the third record
    path.write_bytes(bytes(data))

    reloaded = RetainedLedger(path, max_topics=100)
    reloaded.load()
    intact = [n for n in range(5) if reloaded.seen(key(n))]
    assert intact == ([0, 1, 2, 3, 4] if damage == "torn" else [0, 1, 3, 4])
    assert path.stat().st_size == 20 * len(intact)  # rewritten without the damage


def test_memory_is_bounded_by_topics_forgetting_the_least_recently_handled(
    tmp_path: Path,
) -> None:
    ledger = RetainedLedger(tmp_path / "r.bin", max_topics=3)
    for n in (1, 2, 3, 1, 4):  # 1 handled again: 2 is now the oldest
        ledger.remember([key(n)])
    assert len(ledger) == 3
    assert [n for n in range(1, 5) if ledger.seen(key(n))] == [1, 3, 4]


def test_superseded_records_are_compacted_away(tmp_path: Path) -> None:
    path = tmp_path / "r.bin"
    ledger = RetainedLedger(path, max_topics=10)
    flips = [key(n % 2, b"%d" % n) for n in range(2 * COMPACT_SLACK)]  # two topics, new states
    ledger.append(flips)
    ledger.remember(flips)
    assert ledger.needs_rewrite()
    ledger.rewrite(ledger.snapshot())
    assert path.stat().st_size == 2 * 20
    assert not ledger.needs_rewrite()
    reloaded = RetainedLedger(path, max_topics=10)
    reloaded.load()
    assert reloaded.seen(flips[-1])
    assert reloaded.seen(flips[-2])


async def test_a_tracked_message_is_acked_only_after_its_digest_is_durable(
    tmp_path: Path,
) -> None:
    settled: list[int] = []
    ledger = RetainedLedger(tmp_path / "r.bin", max_topics=10)
    gate = RetainedFilter(ledger, settled.extend, Metrics())
    key = gate.replayed(b"t/1", b"offline")
    assert key is not None
    gate.track(7, key)
    assert gate.replayed(b"t/1", b"offline") is None  # the same state, still in the pipeline
    gate.settle([6, 7, 8])
    assert settled == [6, 8]  # 7 waits for the ledger
    async with asyncio.TaskGroup() as group:
        task = group.create_task(gate.run())
        await until(lambda: 7 in settled, what="ticket 7 passed on")
        task.cancel()
    reloaded = RetainedLedger(tmp_path / "r.bin", max_topics=10)
    reloaded.load()
    assert reloaded.seen(key)


async def test_a_ledger_that_cannot_be_written_costs_repeats_not_acks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settled: list[int] = []
    gate = RetainedFilter(
        RetainedLedger(blocker / "r.bin", max_topics=10), settled.extend, Metrics()
    )
    async with asyncio.TaskGroup() as group:
        task = group.create_task(gate.run())
        for ticket in (1, 2):
            key = gate.replayed(b"t/%d" % ticket, b"offline")
            assert key is not None
            gate.track(ticket, key)
            gate.settle([ticket])
            await until(partial(settled.__contains__, ticket), what=f"ticket {ticket} passed on")
        task.cancel()
    errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1  # logged once, not per message


# -- end to end: four starts against retained messages ---------------------------------------

DEVICES = 100
BAD = 3
STARTS = 4


def all_handled(metrics: Metrics, count: int) -> bool:
    """``count`` messages received, and every one acked."""
    unacked = metrics.registry.get_sample_value("parkwatch_unacked_messages")
    return metrics.received._value.get() >= count and unacked == 0


@pytest.mark.servers
async def test_retained_status_and_bad_payloads_are_handled_once_over_four_starts(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
) -> None:
    """Before the fix: 100, 200, 300, 400 device_status points and 3, 6, 9, 12 dead letters."""
    settings = collector_settings(tmp_path, mosquitto, influxdb, influx_database, topic_prefix)

    def status(n: int) -> str:
        return f"{topic_prefix}/p/storage/b-{n}/status"

    # Last wills without ts (stamped with the receive time), and bad payloads, all retained.
    retained = [(status(n), b"offline") for n in range(DEVICES)]
    retained += [
        (f"{topic_prefix}/p/storage/bad-1/telemetry", b"{not json"),
        (f"{topic_prefix}/p/toaster/t-1/status", b"offline"),
        (f"{topic_prefix}/p/storage/bad-2/telemetry", orjson.dumps({"ts": 1, "soc_pct": 5.0})),
    ]
    await asyncio.to_thread(publish_all, mosquitto, retained, retain=True)

    def status_points() -> int:
        rows = influxdb.query(influx_database, "SELECT count(online) FROM device_status")
        return int(rows[0]["count"]) if rows else 0

    def dead_letters() -> int:
        path = settings.deadletter.path
        return len(path.read_bytes().splitlines()) if path.exists() else 0

    points_per_start, letters_per_start, skipped_per_start = [], [], []
    for start in range(STARTS):
        expected = DEVICES + BAD
        if start == 2:
            # A new state for ten devices while the collector is away: it must be written once,
            # though it arrives twice (queued in our session, and replayed as retained).
            back = [(status(n), b"online") for n in range(10)]
            await asyncio.to_thread(publish_all, mosquitto, back, retain=True)
            expected += len(back)
        async with running_collector(settings) as (collector, running):
            metrics = collector.metrics
            # Every retained message received and acked (so written, dead-lettered or skipped).
            await until(
                partial(all_handled, metrics, expected),
                what=f"{expected} messages handled",
                alive=running,
            )
            skipped_per_start.append(metrics.retained_skipped._value.get())
        await broker_saw_disconnects(mosquitto, settings.mqtt.client_id, start + 1)
        points_per_start.append(status_points())
        letters_per_start.append(dead_letters())

    assert points_per_start == [DEVICES, DEVICES, DEVICES + 10, DEVICES + 10]
    assert letters_per_start == [BAD] * STARTS
    assert skipped_per_start == [0] + [DEVICES + BAD] * (STARTS - 1)
    online = influxdb.query(
        influx_database, "SELECT count(online) FROM device_status WHERE online = true"
    )
    assert int(online[0]["count"]) == 10
