"""Dead letters: every rejected message is kept, with its reason, in a rotating JSONL file.

A record is written (flushed and fsynced, in batches) before the message is acked, so a rejected
message is never lost either: the file is where an operator looks for what a device sent wrong.

When the file cannot be written (read-only or full disk, a path that vanished) the stage treats it
like a database outage: it keeps the batch, retries with jittered backoff until the write
succeeds, counts each failure and reports it to ``/healthz`` (``DeadLetterFile.error``). Those
messages stay unacked meanwhile; acks go out in order, so later acks wait behind them, and once
``mqtt.receive_maximum`` messages are unacked the broker stops sending and holds the rest.
``DeadLetterFile.check`` refuses at start a path that can never work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never
from tenacity import wait_random_exponential as wait_jittered

from collector.messages import DeadLetter
from collector.metrics import Metrics
from parkwatch.errors import ConfigError
from parkwatch.settings import DeadLetterSettings

__all__ = ["DeadLetterFile", "run_dead_letters"]

log = logging.getLogger(__name__)

MAX_BATCH: Final = 1000


class DeadLetterFile:
    """Appends dead-letter records as JSON lines and rotates the file by size."""

    def __init__(self, settings: DeadLetterSettings) -> None:
        self._path = settings.path
        self._max_bytes = settings.max_bytes
        self._backups = settings.backups
        self._max_chars = settings.max_payload_chars
        self.retry_initial_s = settings.retry_initial_s
        self.retry_max_s = settings.retry_max_s
        self.error: str | None = None
        """Why the last write failed; None while writes succeed (read by the health check)."""
        self._rotate_error: str | None = None

    @property
    def path(self) -> Path:
        """The current file."""
        return self._path

    def check(self) -> None:
        """Raise ``ConfigError`` naming ``deadletter.path`` if the path cannot take records.

        Catches what never heals by itself (a read-only file system, a directory that is a file,
        a device such as ``/dev/full``); a full disk shows only when a write fails, at run time.
        """
        path = self._path
        try:
            if path.exists() and not path.is_file():
                # Rotation renames the file: never a device, a directory or a pipe.
                raise ConfigError(f"deadletter.path: {path} is not a regular file")
            if path.parent.exists() and not path.parent.is_dir():
                raise ConfigError(
                    f"deadletter.path: cannot write {path}: {path.parent} is not a directory"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise ConfigError(f"deadletter.path: cannot write {path}: {exc.strerror}") from None

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
        """Append records durably (blocking: call from a thread); return bytes written.

        Raises ``OSError`` if they could not be made durable; a partly written tail is cut off
        again where possible, so a retry does not leave a torn line before its records.
        """
        data = b"".join(orjson.dumps(self.record(letter)) + b"\n" for letter in letters)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: a buffered file would retry a failed flush on close, behind our back.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # a device such as /dev/full cannot truncate
                    os.ftruncate(fd, start)
                raise
            size = start + len(data)
        finally:
            os.close(fd)
        if size >= self._max_bytes:
            self._rotate_or_warn()
        return len(data)

    def _rotate_or_warn(self) -> None:
        # The records are durable already: a failed rotation only lets the file grow, so it is
        # reported (once per distinct error) and tried again with the next write.
        try:
            self._rotate()
        except OSError as exc:
            if str(exc) != self._rotate_error:
                log.warning("cannot rotate dead-letter file %s: %s", self._path, exc.strerror)
            self._rotate_error = str(exc)
        else:
            self._rotate_error = None

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
    """Stage loop: write whatever has queued up in one fsync, then ack those messages.

    A failing write is retried until it succeeds (see the module docstring); the messages are
    acked only once their records are durable.
    """
    while True:
        letters = [await inbox.get()]
        while len(letters) < MAX_BATCH and not inbox.empty():
            letters.append(inbox.get_nowait())
        await _write_until_durable(sink, letters, metrics)
        for letter in letters:
            metrics.dead_letters.labels(letter.reason).inc()
        settle([letter.ticket for letter in letters])
        for _ in letters:
            inbox.task_done()


async def _write_until_durable(
    sink: DeadLetterFile, letters: list[DeadLetter], metrics: Metrics
) -> None:
    held = len(letters)
    # `failed` must not close over `letters`: tenacity's retrying object and its call state
    # refer to each other, so whatever the callback holds lives until a garbage collection,
    # and with the collector's thresholds (parkwatch/cli.py) that kept megabyte payloads of a
    # backlog alive (test_a_backlog_of_large_payloads_keeps_peak_memory_bounded_by_bytes).

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = f"cannot write {sink.path}: {getattr(exc, 'strerror', None) or exc}"
        metrics.dead_letter_write_errors.inc()
        metrics.dead_letter_failing.set(1)
        if reason != sink.error:  # loud once per distinct failure, not once per retry
            log.error(
                "%s; holding %d dead letters unacked and retrying (the broker keeps them)",
                reason,
                held,
            )
        sink.error = reason

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(OSError),
        wait=wait_jittered(multiplier=sink.retry_initial_s, max=sink.retry_max_s),
        stop=stop_never,
        before_sleep=failed,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await asyncio.to_thread(sink.write, letters)
    if sink.error is not None:
        log.warning(
            "dead-letter file %s writable again after %d attempts",
            sink.path,
            retrying.statistics.get("attempt_number", 0),
        )
        sink.error = None
        metrics.dead_letter_failing.set(0)
