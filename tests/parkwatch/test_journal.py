"""The state journal: durable appends, snapshots, torn tails, one collector per directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from parkwatch.errors import StateError
from parkwatch.journal import Recovered, StateJournal


def journal_files(directory: Path) -> list[Path]:
    """The journal files in ``directory``, oldest first."""
    return sorted(directory.glob("journal-*.log"))


async def reopen(directory: Path) -> Recovered:
    """What a new process would recover from ``directory``."""
    journal = StateJournal(directory)
    try:
        return await journal.open()
    finally:
        await journal.close()


async def test_records_after_the_last_snapshot_are_recovered_in_order(tmp_path: Path) -> None:
    journal = StateJournal(tmp_path)
    assert (await journal.open()).state is None
    for n in range(3):
        assert await journal.append({"n": n}) == n + 1
    await journal.checkpoint({"total": 3}, wall=10.0)
    for n in range(3, 5):
        await journal.append({"n": n})
    await journal.close()

    again = StateJournal(tmp_path)
    recovered = await again.open()
    assert recovered.state == {"total": 3}
    assert recovered.seq == 3
    assert [r["n"] for r in recovered.records] == [3, 4]
    assert await again.append({"n": 5}) == 6  # sequence numbers keep rising
    await again.close()


async def test_a_checkpoint_leaves_one_journal_file(tmp_path: Path) -> None:
    journal = StateJournal(tmp_path)
    await journal.open()
    await journal.append({"n": 1})
    await journal.checkpoint({}, wall=0.0)
    await journal.append({"n": 2})
    await journal.checkpoint({}, wall=1.0)
    await journal.close()
    assert len(journal_files(tmp_path)) == 1


async def test_records_a_snapshot_already_holds_are_not_replayed(tmp_path: Path) -> None:
    """A crash between writing the snapshot and deleting the old journal replays nothing twice."""
    journal = StateJournal(tmp_path)
    await journal.open()
    await journal.append({"n": 1})
    await journal.append({"n": 2})
    old = journal_files(tmp_path)[0].read_bytes()
    await journal.checkpoint({"upto": 2}, wall=0.0)
    await journal.close()
    (tmp_path / "journal-0000000000000001.log").write_bytes(old)  # as if never deleted

    recovered = await reopen(tmp_path)
    assert recovered.state == {"upto": 2}
    assert recovered.records == []


async def test_a_torn_last_record_is_skipped_and_reported(tmp_path: Path) -> None:
    journal = StateJournal(tmp_path)
    await journal.open()
    await journal.append({"n": 1})
    await journal.append({"n": 2})
    await journal.close()
    path = journal_files(tmp_path)[0]
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the last record lost its end, as in a crash mid-write

    again = StateJournal(tmp_path)
    recovered = await again.open()
    assert [r["n"] for r in recovered.records] == [1]
    assert recovered.torn == 1
    await again.append({"n": 3})  # into a new file, never after the torn tail
    await again.close()
    assert [r["n"] for r in (await reopen(tmp_path)).records] == [1, 3]


async def test_a_flipped_bit_fails_the_checksum(tmp_path: Path) -> None:
    journal = StateJournal(tmp_path)
    await journal.open()
    await journal.append({"n": 11})
    await journal.close()
    path = journal_files(tmp_path)[0]
    path.write_bytes(path.read_bytes().replace(b'"n":11', b'"n":17'))
    recovered = await reopen(tmp_path)
    assert recovered.records == []
    assert recovered.torn == 1


async def test_two_collectors_cannot_share_a_state_directory(tmp_path: Path) -> None:
    first = StateJournal(tmp_path)
    await first.open()
    with pytest.raises(StateError, match="in use by another collector"):
        await StateJournal(tmp_path).open()
    await first.close()
    second = StateJournal(tmp_path)
    await second.open()  # free again once the first one closed
    await second.close()


async def test_an_unwritable_directory_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="opening failed"):
        await StateJournal(blocker / "state").open()
