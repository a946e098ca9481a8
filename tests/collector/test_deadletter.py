"""Dead-letter file: the record written per rejected message, rotation by size, and the stage
loop that writes, counts and only then settles the messages' acks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.deadletter import DeadLetterFile, run_dead_letters
from collector.messages import DeadLetter, Reason
from collector.metrics import Metrics
from parkwatch.errors import ConfigError
from parkwatch.settings import DeadLetterSettings
from tests.helpers import until
from tests.mounts import MountUnavailable, tmpfs

RECEIVED_AT = 1_700_000_000.5
TOPIC = "parks/caohejing/microgrid/meter-1/telemetry"


def letter(
    payload: bytes = b'{"ts": 1}',
    *,
    reason: str = Reason.INVALID_PAYLOAD,
    ticket: int = 1,
    topic: str = TOPIC,
) -> DeadLetter:
    """A dead letter with sensible defaults."""
    return DeadLetter(
        topic, payload, reason, "pv_kw: Input should be a number", RECEIVED_AT, ticket
    )


def dead_letter_file(tmp_path: Path, **settings: Any) -> DeadLetterFile:
    """A dead-letter file in ``tmp_path``."""
    return DeadLetterFile(DeadLetterSettings(path=tmp_path / "dl" / "dead.jsonl", **settings))


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every JSON record in a dead-letter file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class Settled:
    """A settle callback that records every ticket it is given, in order."""

    def __init__(self) -> None:
        self.tickets: list[int] = []

    def __call__(self, tickets: Iterable[int]) -> None:
        self.tickets.extend(tickets)


# -- the record ------------------------------------------------------------------------------------


def test_a_record_holds_topic_reason_detail_time_and_the_payload_text(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path)
    record = sink.record(letter(b'{"ts": 1, "pv_kw": "x"}', reason=Reason.INVALID_PAYLOAD))
    assert record == {
        "received_at": "2023-11-14T22:13:20.500000+00:00",
        "topic": TOPIC,
        "reason": "invalid_payload",
        "detail": "pv_kw: Input should be a number",
        "payload_bytes": 23,
        "truncated": False,
        "payload": '{"ts": 1, "pv_kw": "x"}',
    }
    assert datetime.fromisoformat(record["received_at"]).timestamp() == RECEIVED_AT


def test_a_payload_cut_short_on_arrival_reports_its_full_size(tmp_path: Path) -> None:
    cut = DeadLetter(TOPIC, b"x" * 64, Reason.TOO_LARGE, "too large", RECEIVED_AT, 1, 1_000_000)
    record = dead_letter_file(tmp_path, max_payload_chars=64).record(cut)
    assert record["payload_bytes"] == 1_000_000
    assert record["truncated"] is True
    assert record["payload"] == "x" * 64


def test_non_ascii_utf8_payloads_are_kept_as_text(tmp_path: Path) -> None:
    payload = '{"site": "漕河泾 🔋"}'.encode()
    record = dead_letter_file(tmp_path).record(letter(payload))
    assert record["payload"] == '{"site": "漕河泾 🔋"}'
    assert record["payload_bytes"] == len(payload)
    assert "payload_base64" not in record


def test_non_utf8_payloads_are_stored_as_base64(tmp_path: Path) -> None:
    payload = b"\xff\xfe\x00binary\x80"
    record = dead_letter_file(tmp_path).record(letter(payload, reason=Reason.INVALID_JSON))
    assert "payload" not in record
    assert base64.b64decode(record["payload_base64"]) == payload
    assert record["truncated"] is False


def test_long_payloads_are_truncated_and_say_so_with_their_full_size(tmp_path: Path) -> None:
    payload = b"x" * 1000
    record = dead_letter_file(tmp_path, max_payload_chars=100).record(
        letter(payload, reason=Reason.TOO_LARGE)
    )
    assert record["payload"] == "x" * 100
    assert record["truncated"] is True
    assert record["payload_bytes"] == 1000


def test_a_payload_exactly_at_the_limit_is_not_truncated(tmp_path: Path) -> None:
    record = dead_letter_file(tmp_path, max_payload_chars=100).record(letter(b"y" * 100))
    assert record["payload"] == "y" * 100
    assert record["truncated"] is False


def test_long_binary_payloads_are_truncated_before_base64(tmp_path: Path) -> None:
    payload = bytes(range(255, -1, -1)) * 4  # starts with bytes that are never UTF-8
    record = dead_letter_file(tmp_path, max_payload_chars=64).record(letter(payload))
    assert base64.b64decode(record["payload_base64"]) == payload[:64]
    assert record["truncated"] is True
    assert record["payload_bytes"] == 1024


def test_written_records_are_one_json_object_per_line_appended_in_order(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path)
    sink.write([letter(b"a\nb", ticket=1), letter(b"c", ticket=2)])
    written = sink.write([letter(b"d", reason=Reason.CLOCK_SKEW, ticket=3)])
    assert written > 0
    records = read_records(sink.path)
    assert [r["payload"] for r in records] == ["a\nb", "c", "d"]  # a newline stays inside JSON
    assert [r["reason"] for r in records] == ["invalid_payload", "invalid_payload", "clock_skew"]
    assert len(sink.path.read_bytes().splitlines()) == 3


def test_write_returns_the_bytes_it_appended(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path)
    first = sink.write([letter()])
    second = sink.write([letter(), letter()])
    assert sink.path.stat().st_size == first + second
    assert second == 2 * first


# -- rotation --------------------------------------------------------------------------------------


def test_the_file_rotates_once_it_reaches_max_bytes(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path, max_bytes=4096, backups=3)
    one = len(orjson.dumps(sink.record(letter(b"p" * 1000)))) + 1
    per_file = -(-4096 // one)  # a file rotates with the write that reaches the limit
    sink.write([letter(b"p" * 1000, ticket=n) for n in range(per_file)])
    assert not sink.path.exists()
    rotated = sink.path.with_name("dead.jsonl.1")
    assert len(read_records(rotated)) == per_file

    sink.write([letter(b"q" * 10)])
    assert [r["payload"] for r in read_records(sink.path)] == ["q" * 10]


def test_rotation_keeps_only_the_configured_number_of_backups(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path, max_bytes=4096, backups=2, max_payload_chars=8192)
    big = b"z" * 5000  # every write alone exceeds max_bytes, so every write rotates
    for generation in range(5):
        sink.write([letter(big + str(generation).encode())])
    directory = sink.path.parent
    assert sorted(p.name for p in directory.iterdir()) == ["dead.jsonl.1", "dead.jsonl.2"]

    def generation_of(name: str) -> str:
        payload: str = read_records(directory / name)[0]["payload"]
        return payload[-1]

    # The newest rotated file is .1, the one before it .2; the three oldest are gone.
    assert generation_of("dead.jsonl.1") == "4"
    assert generation_of("dead.jsonl.2") == "3"


def test_one_backup_is_kept_when_backups_is_one(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path, max_bytes=4096, backups=1, max_payload_chars=8192)
    for generation in range(3):
        sink.write([letter(b"w" * 5000 + str(generation).encode())])
    assert sorted(p.name for p in sink.path.parent.iterdir()) == ["dead.jsonl.1"]
    assert read_records(sink.path.with_name("dead.jsonl.1"))[0]["payload"].endswith("2")


# -- the stage loop --------------------------------------------------------------------------------


async def test_run_dead_letters_writes_counts_by_reason_and_settles_every_ticket(
    tmp_path: Path,
) -> None:
    sink = dead_letter_file(tmp_path)
    metrics = Metrics()
    settled = Settled()
    inbox: asyncio.Queue[DeadLetter] = asyncio.Queue()
    letters = [
        letter(b"1", reason=Reason.INVALID_JSON, ticket=10),
        letter(b"2", reason=Reason.CLOCK_SKEW, ticket=11),
        letter(b"3", reason=Reason.INVALID_JSON, ticket=12),
        letter(b"4", reason=Reason.REJECTED_BY_SINK, ticket=13),
    ]
    for item in letters:
        inbox.put_nowait(item)
    stage = asyncio.create_task(run_dead_letters(sink, inbox, settled, metrics))
    try:
        await asyncio.wait_for(inbox.join(), timeout=10)
    finally:
        stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage

    assert sorted(settled.tickets) == [10, 11, 12, 13]
    assert [r["payload"] for r in read_records(sink.path)] == ["1", "2", "3", "4"]

    def count(reason: str) -> float | None:
        return metrics.registry.get_sample_value("parkwatch_dead_letters_total", {"reason": reason})

    assert count(Reason.INVALID_JSON) == 2
    assert count(Reason.CLOCK_SKEW) == 1
    assert count(Reason.REJECTED_BY_SINK) == 1
    assert count(Reason.TOO_LARGE) == 0


async def test_run_dead_letters_settles_only_after_the_record_is_on_disk(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path)
    seen_on_disk: list[list[str]] = []

    def settle(tickets: Iterable[int]) -> None:
        # What the file holds at the moment the acks are released.
        seen_on_disk.append([r["payload"] for r in read_records(sink.path)])
        list(tickets)

    inbox: asyncio.Queue[DeadLetter] = asyncio.Queue()
    stage = asyncio.create_task(run_dead_letters(sink, inbox, settle, Metrics()))
    try:
        await inbox.put(letter(b"first", ticket=1))
        await asyncio.wait_for(inbox.join(), timeout=10)
        await inbox.put(letter(b"second", ticket=2))
        await asyncio.wait_for(inbox.join(), timeout=10)
    finally:
        stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert seen_on_disk == [["first"], ["first", "second"]]


# -- regression tests of fixed bugs ----------------------------------------------------------------


def test_a_truncated_utf8_payload_is_still_stored_as_text(tmp_path: Path) -> None:
    payload = "€".encode() * 100  # 3 bytes per character: 64 bytes end inside one
    record = dead_letter_file(tmp_path, max_payload_chars=64).record(letter(payload))
    assert record["truncated"] is True
    assert record["payload"] == "€" * 21  # 64 bytes hold 21 whole characters; the split one goes
    assert record["payload_bytes"] == 300


# -- a file that cannot be written -----------------------------------------------------------------


def test_check_accepts_a_writable_path_and_creates_it(tmp_path: Path) -> None:
    sink = dead_letter_file(tmp_path)
    sink.check()
    assert sink.path.is_file()
    assert sink.path.read_bytes() == b""


@pytest.mark.parametrize(
    ("make_path", "why"),
    [
        (lambda tmp: Path("/dev/full"), "/dev/full is not a regular file"),
        (lambda tmp: tmp, "is not a regular file"),
        (lambda tmp: tmp / "f" / "dead.jsonl", "is not a directory"),
    ],
    ids=["dev-full", "a-directory", "under-a-file"],
)
def test_check_refuses_a_path_that_can_never_work_naming_the_setting(
    tmp_path: Path, make_path: Callable[[Path], Path], why: str
) -> None:
    (tmp_path / "f").write_text("a file\n")
    sink = DeadLetterFile(DeadLetterSettings(path=make_path(tmp_path)))
    with pytest.raises(ConfigError, match=r"^deadletter\.path: ") as caught:
        sink.check()
    assert why in str(caught.value)


def test_check_refuses_a_path_on_a_read_only_file_system(read_only_dir: Path) -> None:
    sink = DeadLetterFile(DeadLetterSettings(path=read_only_dir / "dead.jsonl"))
    with pytest.raises(ConfigError, match=r"^deadletter\.path: .*Read-only file system"):
        sink.check()


def failing_then_fixed(tmp_path: Path, how: str) -> tuple[Path, Callable[[], None]]:
    """A dead-letter path that cannot be written, and the repair that makes it work."""
    path = tmp_path / "dl" / "dead.jsonl"
    if how == "dev-full":  # every write fails with ENOSPC, as on a full disk
        path.parent.mkdir()
        path.symlink_to("/dev/full")
        return path, path.unlink
    blocker = tmp_path / "dl"  # the directory is a file: ENOTDIR / EEXIST
    blocker.write_text("in the way\n")
    return path, blocker.unlink


@pytest.mark.parametrize("how", ["dev-full", "under-a-file"])
async def test_a_failing_write_is_retried_counted_reported_and_acked_only_once_recorded(
    tmp_path: Path, how: str
) -> None:
    path, repair = failing_then_fixed(tmp_path, how)
    sink = DeadLetterFile(DeadLetterSettings(path=path, retry_initial_s=0.01, retry_max_s=0.05))
    metrics = Metrics()
    settled = Settled()
    inbox: asyncio.Queue[DeadLetter] = asyncio.Queue()
    for ticket in (1, 2):
        inbox.put_nowait(letter(str(ticket).encode(), ticket=ticket))

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    stage = asyncio.create_task(run_dead_letters(sink, inbox, settled, metrics))
    try:
        await until(
            lambda: (sample("parkwatch_deadletter_write_errors_total") or 0) >= 3,
            what="three failed attempts",
            alive=stage,
        )
        assert sink.error is not None
        assert str(path) in sink.error
        assert sample("parkwatch_deadletter_failing") == 1
        assert settled.tickets == []  # not recorded, so not acked
        repair()
        await asyncio.wait_for(inbox.join(), timeout=10)
    finally:
        stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert settled.tickets == [1, 2]
    assert [r["payload"] for r in read_records(path)] == ["1", "2"]  # once each
    assert sink.error is None
    assert sample("parkwatch_deadletter_failing") == 0
    assert (
        metrics.registry.get_sample_value(
            "parkwatch_dead_letters_total", {"reason": Reason.INVALID_PAYLOAD}
        )
        == 2
    )


def test_a_write_that_fills_the_disk_leaves_no_torn_record(tmp_path: Path) -> None:
    try:
        with tmpfs(tmp_path / "small", size="64k") as mount:
            sink = DeadLetterFile(
                DeadLetterSettings(path=mount.path / "dead.jsonl", max_payload_chars=2000)
            )
            sink.write([letter(b"before", ticket=1)])
            size = sink.path.stat().st_size
            filler = mount.path / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:  # until ENOSPC
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
            batch = [letter(b"b" * 2000, ticket=n) for n in range(10)]  # > the page's slack
            with pytest.raises(OSError, match="No space left"):
                sink.write(batch)
            assert sink.path.stat().st_size == size  # the partial append was cut off again
            filler.unlink()
            sink.write(batch)
            records = read_records(sink.path)
    except MountUnavailable as exc:
        pytest.skip(f"needs a small tmpfs: {exc}")
    assert [r["payload"][:6] for r in records] == ["before", *["bbbbbb"] * 10]
