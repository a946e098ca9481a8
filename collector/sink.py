"""The seam between the writer and a time-series database."""

from __future__ import annotations

from typing import Protocol

from parkwatch.settings import InfluxSettings

__all__ = ["Sink", "make_sink"]


class Sink(Protocol):
    """Writes line-protocol batches (millisecond precision).

    ``write`` raises ``SinkUnavailable`` for failures worth retrying (network, timeouts, 5xx,
    429, auth, and as ``SinkMissing`` a missing database or retention policy: the data is fine,
    the place is not) and ``SinkRejected`` when the database refuses the data itself (HTTP
    400/413/422), which the writer answers by isolating the bad lines.
    """

    name: str
    problem: str | None
    """What is known to be wrong with the target that a ping cannot see (a missing database or
    retention policy), or None; the health check reports it."""

    async def start(self) -> None:
        """Open connections; create the database where that is the adapter's job."""

    async def write(self, body: bytes) -> None:
        """Write newline-separated lines."""

    async def ping(self) -> bool:
        """Whether the database answers."""

    async def close(self) -> None:
        """Release connections."""


def make_sink(settings: InfluxSettings) -> Sink:
    """The adapter for the configured InfluxDB API."""
    if settings.api == "v1":
        from collector.adapters.influx_v1 import InfluxV1Sink  # noqa: PLC0415 - adapter seam

        return InfluxV1Sink(settings)
    from collector.adapters.influx_v2 import InfluxV2Sink  # noqa: PLC0415 - adapter seam

    return InfluxV2Sink(settings)
