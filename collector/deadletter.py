"""Dead letters: every rejected message is kept, with its reason, in a rotating JSONL file.

A record is written (flushed and fsynced, in batches) before the message is acked, so a rejected
message is never lost either: the file is where an operator looks for what a device sent wrong.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from collector.messages import DeadLetter
from collector.metrics import Metrics
from parkwatch.settings import DeadLetterSettings

__all__ = ["DeadLetterFile", "run_dead_letters"]

MAX_BATCH: Final = 1000


class DeadLetterFile:
    """Appends dead-letter records as JSON lines and rotates the file by size."""

    def __init__(self, settings: DeadLetterSettings) -> None:
        self._path = settings.path
        self._max_bytes = settings.max_bytes
        self._backups = settings.backups
        self._max_chars = settings.max_payload_chars

    @property
    def path(self) -> Path:
        """The current file."""
        return self._path

    def record(self, letter: DeadLetter) -> dict[str, Any]:
        """The JSON object stored for one dead letter (raw payload bounded)."""
        payload = letter.payload
        # letter.size, not len(payload): the MQTT adapter keeps only the start of a too-large one.
        truncated = letter.size > self._max_chars
        body = payload[: self._max_chars]
        record: dict[str, Any] = {
            "received_at": datetime.fromtimestamp(letter.received_at, UTC).isoformat(),
            "topic": letter.topic,
            "reason": letter.reason,
            "detail": letter.detail,
            "payload_bytes": letter.size,
            "truncated": truncated,
        }
        text = _utf8_prefix(body, truncated)
        if text is None:
            record["payload_base64"] = base64.b64encode(body).decode("ascii")
        else:
            record["payload"] = text
        return record

    def write(self, letters: Iterable[DeadLetter]) -> int:
        """Append records durably (blocking: call from a thread); return bytes written."""
        data = b"".join(orjson.dumps(self.record(letter)) + b"\n" for letter in letters)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        if size >= self._max_bytes:
            self._rotate()
        return len(data)

    def _rotate(self) -> None:
        for index in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{index}")
            if older.exists():
                older.replace(self._path.with_name(f"{self._path.name}.{index + 1}"))
        self._path.replace(self._path.with_name(f"{self._path.name}.1"))


def _utf8_prefix(body: bytes, truncated: bool) -> str | None:
    """``body`` as text, or None if it is not UTF-8. A cut may split the last character (up to
    3 bytes of a 4-byte sequence): those bytes are dropped rather than calling the text binary."""
    for cut in range(4 if truncated else 1):
        try:
            return body[: len(body) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


async def run_dead_letters(
    sink: DeadLetterFile,
    inbox: asyncio.Queue[DeadLetter],
    settle: Callable[[Iterable[int]], None],
    metrics: Metrics,
) -> None:
    """Stage loop: write whatever has queued up in one fsync, then ack those messages."""
    while True:
        letters = [await inbox.get()]
        while len(letters) < MAX_BATCH and not inbox.empty():
            letters.append(inbox.get_nowait())
        # If the disk fails this raises and stops the collector: unacked messages stay with the
        # broker, which is the safe outcome for a failure we cannot work around.
        await asyncio.to_thread(sink.write, letters)
        for letter in letters:
            metrics.dead_letters.labels(letter.reason).inc()
        settle([letter.ticket for letter in letters])
        for _ in letters:
            inbox.task_done()
