"""Retained messages are state, not events: remember which ones were handled, across restarts.

A broker sends every retained message again on each SUBSCRIBE (each start, each reconnect), with
the RETAIN flag set. Handling it again re-stamps a last will without ``ts`` with a new receive
time (a second ``device_status`` point per start) and dead-letters a retained bad payload again.
``RetainedLedger`` keeps, per retained topic, a digest of the last payload handled on it; a replay
(RETAIN flag set) equal to it, or to a message of that topic still in the pipeline, is acked and
skipped. Anything else goes through the pipeline: a different payload is a new state. Live
messages (RETAIN flag clear) are always handled; on a topic known to carry retained messages they
update the ledger too, so that the replay of a state first seen live is not handled twice.

Durability: a digest is appended and fsynced only once its message is safe (written, spooled or
dead-lettered) and before its ack, so a crash can cost a repeat, never a message. The file holds
fixed-size records (topic digest, payload digest, CRC-32) appended in batches; a torn or corrupt
record is skipped on load, and the file is rewritten when it holds mostly superseded records.
Memory and file are bounded by ``max_topics``: beyond it the least recently handled topic is
forgotten (its retained message would be handled once more after a restart: a repeat, not a loss).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from collector.durable import replace_atomically
from collector.metrics import Metrics

__all__ = ["RetainedFilter", "RetainedKey", "RetainedLedger", "retained_key"]

log = logging.getLogger(__name__)

RetainedKey = tuple[int, int]
"""(digest of the topic, digest of the payload)."""

_DIGEST: Final = struct.Struct("<Q")
_RECORD: Final = struct.Struct("<QQI")  # topic digest, payload digest, CRC-32 of the two
COMPACT_SLACK: Final = 4096  # superseded records tolerated before a rewrite, beyond 1x live


def _digest(data: bytes, person: bytes) -> int:
    return int(_DIGEST.unpack(hashlib.blake2b(data, digest_size=8, person=person).digest())[0])


def retained_key(topic: bytes, payload: bytes) -> RetainedKey:
    """The ledger key of one retained message (64-bit BLAKE2b digests of topic and payload)."""
    return _digest(topic, b"topic"), _digest(payload, b"payload")


def _pack(key: RetainedKey) -> bytes:
    body = _DIGEST.pack(key[0]) + _DIGEST.pack(key[1])
    return body + struct.pack("<I", zlib.crc32(body))


class RetainedLedger:
    """The retained (topic, payload) digests already handled, kept in a small durable file.

    ``load``, ``append`` and ``rewrite`` do blocking file I/O (run them in a thread); ``seen``
    and ``remember`` only touch memory and belong to the event loop.
    """

    def __init__(self, path: Path, *, max_topics: int) -> None:
        self.path = path
        self._max_topics = max_topics
        self._latest: dict[int, int] = {}  # topic digest -> payload digest, oldest first
        self._records = 0  # records in the file, superseded ones included

    def __len__(self) -> int:
        return len(self._latest)

    def seen(self, key: RetainedKey) -> bool:
        """Whether exactly this payload was handled last on this topic."""
        return self._latest.get(key[0]) == key[1]

    def knows(self, topic_digest: int) -> bool:
        """Whether this topic carries retained messages (one was handled)."""
        return topic_digest in self._latest

    def load(self) -> None:
        """Read the file (a missing one is an empty ledger); rewrite it if it was damaged."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        size = _RECORD.size
        damaged = len(data) % size != 0
        for offset in range(0, len(data) - size + 1, size):
            topic, payload, crc = _RECORD.unpack_from(data, offset)
            if zlib.crc32(data[offset : offset + 16]) != crc:
                damaged = True
                continue
            self._remember_one((topic, payload))
        self._records = len(data) // size
        if damaged:
            log.warning("%s: skipped a torn or corrupt record; rewriting the file", self.path)
            self.rewrite(self.snapshot())

    def remember(self, keys: Iterable[RetainedKey]) -> None:
        """Record in memory that these messages were handled (after ``append`` made it durable)."""
        for key in keys:
            self._remember_one(key)

    def _remember_one(self, key: RetainedKey) -> None:
        latest = self._latest
        latest.pop(key[0], None)  # re-inserted at the end: most recently handled
        latest[key[0]] = key[1]
        if len(latest) > self._max_topics:
            del latest[next(iter(latest))]

    def append(self, keys: list[RetainedKey]) -> None:
        """Append records durably (write, fsync); create the file and its directory if needed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(b"".join(_pack(key) for key in keys))
            handle.flush()
            os.fsync(handle.fileno())
        self._records += len(keys)

    def needs_rewrite(self) -> bool:
        """Whether the file holds so many superseded records that rewriting it pays."""
        return self._records > 2 * len(self._latest) + COMPACT_SLACK

    def snapshot(self) -> list[RetainedKey]:
        """The live entries, oldest first (to hand to ``rewrite`` in a thread)."""
        return list(self._latest.items())

    def rewrite(self, keys: list[RetainedKey]) -> None:
        """Replace the file by one holding ``keys`` only: temp file, fsync, rename, fsync dir."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(self.path, b"".join(_pack(key) for key in keys))
        self._records = len(keys)


class RetainedFilter:
    """The MQTT adapter's use of the ledger: skip known replays, record what becomes safe.

    ``settle`` is where the pipeline reports safe messages: tickets of tracked messages are held
    back until ``run`` has made their digests durable, then passed on (and so acked, in order).
    A ledger that cannot be written costs repeats after a restart, never a message: the tickets
    are passed on anyway, and the failure is logged once.
    """

    def __init__(
        self, ledger: RetainedLedger, settle: Callable[[Iterable[int]], None], metrics: Metrics
    ) -> None:
        self._ledger = ledger
        self._settle = settle
        self._metrics = metrics
        self._loaded = False
        self._pending: dict[int, RetainedKey] = {}  # ticket -> key, until safe
        self._in_flight: dict[RetainedKey, int] = {}  # key -> tickets pending with it
        self._safe: list[tuple[int, RetainedKey]] = []  # safe, waiting to be recorded
        self._safe_ready = asyncio.Event()
        self._write_failed = False

    async def load(self) -> None:
        """Read the ledger once (before the first subscription)."""
        if self._loaded:
            return
        self._loaded = True
        try:
            await asyncio.to_thread(self._ledger.load)
        except OSError as exc:
            log.error(  # noqa: TRY400 - the reason is the message; a traceback adds nothing
                "cannot read %s (%s): retained messages will be handled again",
                self._ledger.path,
                exc.strerror,
            )

    def replayed(self, topic: bytes, payload: bytes) -> RetainedKey | None:
        """A message with the RETAIN flag: None if that state is known (ack and skip it), else
        the key to ``track`` it under."""
        key = retained_key(topic, payload)
        if self._ledger.seen(key) or key in self._in_flight:
            self._metrics.retained_skipped.inc()
            return None
        return key

    def live(self, topic: bytes, payload: bytes) -> RetainedKey | None:
        """A message without the RETAIN flag: the key to ``track`` it under if its topic carries
        retained messages (its replay must then be known), else None."""
        if not len(self._ledger):
            return None  # no retained topic known: nothing to hash
        topic_digest = _digest(topic, b"topic")
        if not self._ledger.knows(topic_digest):
            return None
        return topic_digest, _digest(payload, b"payload")

    def track(self, ticket: int, key: RetainedKey) -> None:
        """A message went into the pipeline under ``ticket``: record ``key`` once it is safe."""
        self._pending[ticket] = key
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def forget(self, ticket: int) -> None:
        """The message under ``ticket`` will not be settled (given up)."""
        key = self._pending.pop(ticket, None)
        if key is not None:
            self._done(key)

    def _done(self, key: RetainedKey) -> None:
        left = self._in_flight.pop(key) - 1
        if left:
            self._in_flight[key] = left

    def settle(self, tickets: Iterable[int]) -> None:
        """Pass safe tickets on, holding back tracked ones until they are recorded."""
        pending = self._pending
        if not pending:
            self._settle(tickets)
            return
        now: list[int] = []
        for ticket in tickets:
            key = pending.pop(ticket, None)
            if key is None:
                now.append(ticket)
            else:
                self._safe.append((ticket, key))
                self._safe_ready.set()
        self._settle(now)

    async def run(self) -> None:
        """Record safe tracked messages durably, then pass their tickets on; until cancelled."""
        ledger = self._ledger
        while True:
            await self._safe_ready.wait()
            self._safe_ready.clear()
            safe, self._safe = self._safe, []
            keys = [key for _, key in safe]
            try:
                await asyncio.to_thread(ledger.append, keys)
                ledger.remember(keys)
                if ledger.needs_rewrite():
                    await asyncio.to_thread(ledger.rewrite, ledger.snapshot())
            except OSError as exc:
                if not self._write_failed:
                    self._write_failed = True
                    log.error(  # noqa: TRY400 - as above
                        "cannot write %s (%s): retained messages will be handled again after "
                        "a restart",
                        ledger.path,
                        exc.strerror,
                    )
            for key in keys:
                self._done(key)
            self._settle([ticket for ticket, _ in safe])
