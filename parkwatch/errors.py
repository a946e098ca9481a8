"""The exception tree of parkwatch; library exceptions are translated into it at the adapters.

::

    ParkwatchError
    ├── ConfigError            invalid configuration, raised at start
    │   └── RuleError          invalid rule files: every problem as ``file:line: message``
    ├── SourceError            the MQTT broker adapter (connect, subscribe)
    ├── SinkError              the time-series database adapter
    │   ├── SinkUnavailable    retryable: timeouts, 5xx, 429 (carries retry_after)
    │   └── SinkRejected       not retryable: the database refused the data (HTTP 4xx)
    ├── SpoolError             the on-disk spool
    │   ├── SpoolFull          the size bound is reached; the caller must stop acking
    │   └── SpoolCorrupt       a segment failed its checksum (reported, the tail skipped)
    ├── StateError             the KPI/rule state journal or snapshot (disk, lock)
    └── ServerError            a local development server failed to start or stop
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ParkwatchError",
    "RuleError",
    "ServerError",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "SourceError",
    "SpoolCorrupt",
    "SpoolError",
    "SpoolFull",
    "StateError",
]


class ParkwatchError(Exception):
    """Root of every error parkwatch raises on purpose."""


class ConfigError(ParkwatchError):
    """The configuration is invalid; raised at start with a message naming the setting."""


class RuleError(ConfigError):
    """Rule files are invalid; ``problems`` holds each as ``file:line: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class SourceError(ParkwatchError):
    """The MQTT broker could not be reached or refused us."""


class SinkError(ParkwatchError):
    """Writing to the time-series database failed."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, target: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.target = target


class SinkUnavailable(SinkError):
    """A transient failure: the same write may succeed later."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        target: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, target=target)
        self.retry_after = retry_after


class SinkRejected(SinkError):
    """The database refused the data itself (bad line, type conflict); retrying cannot help."""


class SpoolError(ParkwatchError):
    """The on-disk spool failed."""


class SpoolFull(SpoolError):
    """The spool reached its size bound."""


class SpoolCorrupt(SpoolError):
    """A spool segment failed its checksum."""


class StateError(ParkwatchError):
    """The state journal or snapshot of the KPI and rule stages could not be read or written."""


class ServerError(ParkwatchError):
    """A local development server (Mosquitto, InfluxDB, VictoriaMetrics) failed."""
