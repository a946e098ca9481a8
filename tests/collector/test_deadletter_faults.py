"""A dead-letter file that stops taking records while the collector runs: a collector process
against real Mosquitto and InfluxDB (the harness of tests/faults.py).

Before the fix the first bad message's failed write killed the collector, and every restart died
again on its redelivery. Now the collector keeps running: good messages are written, the bad one
stays unacked (the broker keeps it) while the write is retried with backoff, ``/healthz`` says
503 with the reason, ``parkwatch_deadletter_write_errors_total`` counts the attempts, and once the
path works again the bad message is dead-lettered exactly once and every ack goes out.

How the path is broken (tests run as root, for whom a chmod'ed directory stays writable):

* ``dev-full``: the dead-letter file is swapped for a symlink to ``/dev/full`` (every write
  fails with ENOSPC, as on a full disk); repaired by removing the symlink.
* ``read-only``: the dead-letter directory is a tmpfs, remounted read-only (EROFS) and back; where
  mounting is not allowed, the directory is swapped for a plain file instead (ENOTDIR), and the
  recorded ``breakage`` property says so.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest

from parkwatch.localservers import InfluxDB1, Mosquitto
from tests.faults import (
    CollectorProcess,
    Publisher,
    influx_count,
    influx_seqs,
    numbered_stream,
    numbered_topic,
    wait_until,
)
from tests.mounts import MountUnavailable, tmpfs

pytestmark = pytest.mark.servers

TOTAL = 2500
BAD = (500, 2000)  # these numbers carry a payload the decoder rejects
WAIT_S = 60.0
RETRY_ENV = {
    "PARKWATCH_DEADLETTER__RETRY_INITIAL_S": "0.05",
    "PARKWATCH_DEADLETTER__RETRY_MAX_S": "0.3",
}


class Breakage:
    """Breaks and repairs the dead-letter path of a collector while it runs."""

    def __init__(self, path: Path, stack: ExitStack, how: str) -> None:
        self.path = path
        self.how = how
        self.used = how
        self.errno_text = ""
        self._repair: Callable[[], None] = lambda: None
        self._break: Callable[[], None] = lambda: None
        directory = path.parent
        if how == "dev-full":
            directory.mkdir(parents=True)
            self._break, self._repair = self._symlink_to_dev_full, path.unlink
            self.errno_text = "No space left on device"
            return
        try:
            mount = stack.enter_context(tmpfs(directory))
        except MountUnavailable:
            self.used = "path under a file (no mount allowed)"
            directory.mkdir(parents=True)
            self._break, self._repair = self._directory_to_file, self._file_to_directory
            self.errno_text = "directory"
            return
        self.used = "read-only tmpfs remount"
        self._break, self._repair = mount.read_only, mount.writable
        self.errno_text = "Read-only file system"

    def _symlink_to_dev_full(self) -> None:
        link = self.path.with_name("dead.link")
        link.symlink_to("/dev/full")
        os.replace(link, self.path)  # atomic: no write sees the path missing

    def _directory_to_file(self) -> None:
        self.path.parent.rename(self.path.parent.with_name("dl-away"))
        self.path.parent.write_text("in the way\n")

    def _file_to_directory(self) -> None:
        self.path.parent.unlink()
        self.path.parent.with_name("dl-away").rename(self.path.parent)

    def break_(self) -> None:
        """Make every dead-letter write fail."""
        self._break()

    def repair(self) -> None:
        """Make the path writable again."""
        self._repair()


def bad_message(prefix: str, i: int, base_ms: int) -> tuple[int, str, bytes]:
    """Message ``i`` with a string where a number belongs: dead-lettered as invalid_payload."""
    payload = {"ts": base_ms + i, "seq": i, "pv_kw": "not a number"}
    return i, numbered_topic(prefix, i), orjson.dumps(payload)


def messages(prefix: str, base_ms: int) -> Iterator[tuple[int, str, bytes]]:
    """TOTAL numbered messages, the BAD ones rejected by the decoder."""
    for item in numbered_stream(prefix, range(TOTAL), base_ms):
        yield bad_message(prefix, item[0], base_ms) if item[0] in BAD else item


@pytest.mark.parametrize("how", ["dev-full", "read-only"])
def test_an_unwritable_dead_letter_file_holds_the_bad_message_and_keeps_good_data_flowing(
    *,
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb: InfluxDB1,
    influx_database: str,
    topic_prefix: str,
    record_property: Callable[[str, object], None],
    how: str,
) -> None:
    with ExitStack() as stack:
        collector = CollectorProcess(
            tmp_path / "collector",
            broker=mosquitto,
            influx=influxdb,
            database=influx_database,
            topic_prefix=topic_prefix,
            env={"PARKWATCH_DEADLETTER__PATH": str(tmp_path / "dl" / "dead.jsonl"), **RETRY_ENV},
        )
        stack.callback(collector.close)
        breakage = Breakage(tmp_path / "dl" / "dead.jsonl", stack, how)
        record_property("breakage", breakage.used)
        collector.start()
        collector.wait_subscribed()
        breakage.break_()

        publisher = Publisher(mosquitto, client_id=f"pub-{topic_prefix}"[:64])
        stack.callback(publisher.close)
        publisher.connect()
        base_ms = int(time.time() * 1000) - 600_000
        good = TOTAL - len(BAD)

        def stored() -> str:
            return f"InfluxDB holds {influx_count(influxdb, influx_database)} of {good}"

        publisher.start_stream(messages(topic_prefix, base_ms))
        publisher.join_stream()
        publisher.wait_accepted(TOTAL)
        try:
            wait_until(
                lambda: influx_count(influxdb, influx_database) >= good,
                timeout=WAIT_S,
                what=f"{good} good points written while dead letters fail",
                collector=collector,
                context=stored,
            )
        except AssertionError as exc:
            raise AssertionError(f"{stored()}\n{exc}") from None
        record_property("good_written_while_broken", influx_count(influxdb, influx_database))

        # Still running, loudly unhealthy, counting, holding the bad messages (and, acks being
        # in order, everything after the first of them) unacked.
        assert collector.running
        status, health = collector.health()
        dead = health["checks"]["deadletter"]
        assert status == 503, health
        assert dead["ok"] is False
        assert breakage.errno_text in dead["detail"]
        assert str(breakage.path) in dead["detail"]
        assert health["checks"]["sink"]["ok"] is True  # the database is fine
        wait_until(
            lambda: collector.metric("parkwatch_deadletter_write_errors_total") >= 2,
            timeout=WAIT_S,
            what="retries counted",
            collector=collector,
        )
        assert collector.metric("parkwatch_deadletter_failing") == 1
        unacked = collector.metric("parkwatch_unacked_messages")
        record_property("unacked_while_broken", unacked)
        assert unacked >= TOTAL - BAD[0]

        breakage.repair()
        wait_until(
            lambda: collector.metric("parkwatch_unacked_messages") == 0,
            timeout=WAIT_S,
            what="every message acked after the repair",
            collector=collector,
        )
        wait_until(
            lambda: collector.health()[0] == 200,
            timeout=WAIT_S,
            what="healthy again",
            collector=collector,
        )
        assert collector.metric("parkwatch_deadletter_failing") == 0
        records = [orjson.loads(line) for line in breakage.path.read_bytes().splitlines()]
        assert sorted(orjson.loads(r["payload"])["seq"] for r in records) == list(BAD)
        assert {r["reason"] for r in records} == {"invalid_payload"}
        seqs = Counter(influx_seqs(influxdb, influx_database, base_ms, TOTAL))
        assert set(seqs) == set(range(TOTAL)) - set(BAD)
        assert max(seqs.values()) == 1
        record_property("dead_lettered_after_repair", len(records))
        assert collector.terminate() == 0
