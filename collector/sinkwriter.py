"""Writing points to the database: retries, learnt refusals, bad-line isolation, failure state.

The writer stage (collector/writer.py) hands a batch's points to `SinkWriter.write_isolating`:

* Lines the database is known to refuse (collector/refusals.py: a field type it holds, a series
  a cardinality limit refused) are taken out before the write.
* The rest is written with retries for ``SinkUnavailable`` (jittered exponential backoff,
  ``Retry-After`` honoured), a bounded number of attempts or forever.
* A refusal (HTTP 400) that teaches a field type takes out every line conflicting with it and
  writes the others again; a request refused entirely (``dropped`` = its size) needs no
  bisecting; otherwise the batch is bisected until the refused lines are isolated. InfluxDB
  stores the good lines of a refused request, so re-sending them re-writes the same points.

Failures are loud but not a flood: the first failed write of a streak is logged, then one line
per ``failure_log_interval_s`` with counts; ``write_failure`` (health) says for how long writes
have been failing and why, until one succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from collector.metrics import Metrics
from collector.refusals import RefusalMemory, Refused, refusal_of, series_key
from collector.sink import Sink
from collector.spool import Spool
from parkwatch.errors import SinkMissing, SinkRejected, SinkUnavailable
from parkwatch.points import Point
from parkwatch.settings import WriterSettings
from parkwatch.throttle import Throttle

__all__ = ["Rejected", "SinkWriter", "Throttle", "body"]

log = logging.getLogger(__name__)

Rejected = list[tuple[Point, Refused]]
"""Points the database refuses, each with why."""

_MISSING_HINTS = {
    "database": "create it (with influx.create_database on, a user allowed to is enough)",
    "bucket": "create the bucket",
    "retention policy": "create it (CREATE RETENTION POLICY) or fix influx.retention_policy",
}


def body(points: Sequence[Point]) -> bytes:
    """The write body for ``points``: their lines, newline-separated."""
    return "\n".join(point.line for point in points).encode()


class SinkWriter:
    """Writes points to the sink; see the module docstring."""

    def __init__(
        self, settings: WriterSettings, sink: Sink, metrics: Metrics, spool: Spool | None = None
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._metrics = metrics
        self._spool = spool  # only to say in the log what waits there
        self._failing_since: float | None = None  # monotonic time of the first failed write
        self._failure = ""
        self._failed_attempts = 0
        self._write_log = Throttle(settings.failure_log_interval_s)
        self._refusals = RefusalMemory()
        metrics.writes_failing.set_function(self._failing_seconds)

    @property
    def write_failure(self) -> str | None:
        """For how long and why writes fail, or None while the last one succeeded."""
        if self._failing_since is None:
            return None
        return f"writes failing for {self._failing_seconds():.0f} s: {self._failure}"

    def _failing_seconds(self) -> float:
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def retrying(self, attempts: int | None = -1) -> AsyncRetrying:
        """Retries for ``SinkUnavailable``: ``retry_max_attempts``, or forever for None."""
        settings = self._settings
        backoff = wait_random_exponential(
            multiplier=settings.retry_initial_s, max=settings.retry_max_s
        )

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            if isinstance(error, SinkUnavailable) and error.retry_after is not None:
                return min(error.retry_after, settings.retry_max_s * 12)
            return float(backoff(state))

        if attempts == -1:
            attempts = settings.retry_max_attempts
        return AsyncRetrying(
            stop=stop_never if attempts is None else stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception_type(SinkUnavailable),
            reraise=True,
        )

    async def _write(self, payload: bytes, lines: int, retrying: AsyncRetrying) -> None:
        async for attempt in retrying:
            with attempt:
                started = time.perf_counter()
                self._metrics.write_requests.inc()
                try:
                    await self._sink.write(payload)
                except SinkUnavailable as exc:
                    self._write_failed(exc)
                    raise
                except SinkRejected:
                    self._metrics.write_errors.labels("rejected").inc()
                    self._write_answered()  # the database answered: it is up
                    raise
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                self._metrics.batch_lines.observe(lines)
                self._write_answered()

    def _write_failed(self, exc: SinkUnavailable) -> None:
        """Count a failed write; log the first of a streak, then once per interval."""
        kind = "unavailable"
        if isinstance(exc, SinkMissing):
            missing = "retention_policy" if exc.what == "retention policy" else "database"
            kind = f"{missing}_not_found"
        self._metrics.write_errors.labels(kind).inc()
        self._metrics.sink_up.set(0)
        self._failed_attempts += 1
        self._failure = str(exc)
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self._write_log.restart()  # a new streak: its first failure is logged at once
        if self._write_log.due() is None:
            return
        hint = f"; {_MISSING_HINTS[exc.what]}" if isinstance(exc, SinkMissing) else ""
        spooled = (
            f"; the spool holds {self._spool.stats.bytes} bytes"
            if self._spool is not None
            else "; nothing is acked meanwhile"
        )
        log.log(
            # A missing target needs an operator; an outage usually passes by itself.
            logging.ERROR if isinstance(exc, SinkMissing) else logging.WARNING,
            "writes to %s failing for %.0f s (%d attempts): %s%s%s",
            self._sink.name,
            self._failing_seconds(),
            self._failed_attempts,
            exc,
            hint,
            spooled,
        )

    def _write_answered(self) -> None:
        self._metrics.sink_up.set(1)
        if self._failing_since is not None:
            log.info(
                "writes to %s succeed again after %.0f s (%d failed attempts)",
                self._sink.name,
                self._failing_seconds(),
                self._failed_attempts,
            )
            self._failing_since = None
            self._failed_attempts = 0

    def _screen(self, points: Sequence[Point]) -> tuple[Rejected, list[Point]]:
        """Split ``points`` into those the database is known to refuse, and the others."""
        if not self._refusals:
            return [], list(points)
        rejected: Rejected = []
        pending: list[Point] = []
        for point in points:
            refused = self._refusals.screen(point.line)
            if refused is None:
                pending.append(point)
            else:
                rejected.append((point, refused))
        return rejected, pending

    async def write_isolating(self, points: Sequence[Point], attempts: int | None = -1) -> Rejected:
        """Write ``points``; on a rejection, learn and bisect; return the rejected points.

        Lines known to be refused are taken out first. A refusal that teaches a field type takes
        out every line that conflicts with it and writes the rest again; a request the database
        refused entirely (``dropped`` = its size) needs no bisecting (a limit's refusal of several
        series is sent again series by series, to learn each); otherwise the halves go
        through the same. ``attempts`` as for `retrying`, and the same for every half: a
        caller that retries forever must not see ``SinkUnavailable`` because the database went
        away mid-bisect.
        """
        rejected, pending = self._screen(points)
        while pending:
            try:
                await self._write(body(pending), len(pending), self.retrying(attempts))
            except SinkRejected as exc:
                refused = refusal_of(exc)
                if exc.conflict is not None:
                    # Known already, too, when another worker learnt it since this was sent.
                    self._refusals.learn_conflict(exc.conflict)
                    known, rest = self._screen(pending)
                    if known:
                        rejected += known
                        pending = rest
                        continue
                if len(pending) == 1 or (exc.dropped is not None and exc.dropped >= len(pending)):
                    if exc.limit is not None:
                        series = _by_series(pending)
                        if len(series) > 1:
                            # Every line refused, the answer naming one series: another reason
                            # could have refused some, so send each series on its own and learn
                            # the ones a limit refuses (else a batch of only new devices would
                            # teach nothing and cost a request at every later batch).
                            for lines in series.values():
                                rejected += await self.write_isolating(lines, attempts)
                            return rejected
                        # One series, refused by a limit: remember it.
                        self._refusals.learn_refused_series(pending[0].line, exc.limit)
                    return rejected + [(point, refused) for point in pending]
                middle = len(pending) // 2
                # Bisecting re-sends lines a partial write may have stored: harmless, same points.
                left = await self.write_isolating(pending[:middle], attempts)
                right = await self.write_isolating(pending[middle:], attempts)
                return rejected + left + right
            return rejected
        return rejected


def _by_series(points: Sequence[Point]) -> dict[str, list[Point]]:
    """``points`` grouped by their line's series key, in order."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(series_key(point.line), []).append(point)
    return groups
