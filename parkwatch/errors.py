"""The exception tree of parkwatch; library exceptions are translated into it at the adapters.

::

    ParkwatchError
    ├── ConfigError            invalid configuration, raised at start
    │   └── RuleError          invalid rule files: every problem as ``file:line: message``
    ├── SourceError            the MQTT broker adapter (connect, subscribe)
    ├── SinkError              the time-series database adapter
    │   ├── SinkUnavailable    retryable: timeouts, 5xx, 429 (carries retry_after)
    │   │   └── SinkMissing    the database (bucket) or retention policy does not exist
    │   └── SinkRejected       not retryable: the database refused the data (HTTP 4xx);
    │                          carries what the answer says: lines dropped, a field type
    │                          conflict, a cardinality limit
    ├── NotifyError            a notification receiver (Alertmanager, Apprise, webhook)
    │   ├── NotifyUnavailable  retryable: timeouts, connection errors, 5xx, 429 (retry_after)
    │   └── NotifyRejected     not retryable: the receiver refused the message (HTTP 4xx)
    ├── SpoolError             the on-disk spool
    │   ├── SpoolFull          the size bound is reached; the caller must stop acking
    │   └── SpoolCorrupt       a segment failed its checksum (reported, the tail skipped)
    ├── StateError             the KPI/rule state journal or snapshot (disk, lock)
    ├── ServerError            a local development server failed to start or stop
    └── GrafanaError           provisioning Grafana over its HTTP API
        ├── GrafanaUnreachable no Grafana answers at the URL (refused, timeout, not Grafana)
        ├── GrafanaAuthError   the credentials were refused (401) or lack a permission (403)
        ├── GrafanaUnsupported the Grafana version is older than the dashboards need
        └── GrafanaConflict    something parkwatch did not create (or that was edited) is in the way
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ConfigError",
    "FieldTypeConflict",
    "GrafanaAuthError",
    "GrafanaConflict",
    "GrafanaError",
    "GrafanaUnreachable",
    "GrafanaUnsupported",
    "NotifyError",
    "NotifyRejected",
    "NotifyUnavailable",
    "ParkwatchError",
    "RuleError",
    "ServerError",
    "SinkError",
    "SinkMissing",
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


class SinkMissing(SinkUnavailable):
    """The database (bucket) or retention policy written to does not exist.

    Retryable: the data is good, and the write succeeds once the target is created. ``what`` is
    ``"database"``, ``"retention policy"`` or ``"bucket"``.
    """

    def __init__(
        self, message: str, *, what: str, status: int | None = None, target: str = ""
    ) -> None:
        super().__init__(message, status=status, target=target)
        self.what = what


class FieldTypeConflict(NamedTuple):
    """A field the database holds with another type than a written line gives it."""

    measurement: str
    field: str
    stored: str
    """The type the database holds: float, integer, unsigned, string or boolean."""


class SinkRejected(SinkError):
    """The database refused the data itself (bad line, type conflict); retrying cannot help.

    What the answer says, where it says it: ``dropped`` lines of the request were not stored
    (InfluxDB's "partial write ... dropped=N"; the others were); ``conflict`` the first field
    type conflict; ``limit`` the cardinality limit that refused new series
    (``max-series-per-database`` or ``max-values-per-tag``).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        target: str = "",
        dropped: int | None = None,
        conflict: FieldTypeConflict | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(message, status=status, target=target)
        self.dropped = dropped
        self.conflict = conflict
        self.limit = limit


class NotifyError(ParkwatchError):
    """Delivering a notification to a receiver failed."""

    retryable: bool = False

    def __init__(self, message: str, *, receiver: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.receiver = receiver
        self.status = status


class NotifyUnavailable(NotifyError):
    """A transient failure: the same notification may be delivered later."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        receiver: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, receiver=receiver, status=status)
        self.retry_after = retry_after


class NotifyRejected(NotifyError):
    """The receiver refused the notification itself (bad request, auth); retrying cannot help."""


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


class GrafanaError(ParkwatchError):
    """Provisioning Grafana failed; the message is one line naming the URL and the cause."""


class GrafanaUnreachable(GrafanaError):
    """Nothing that answers like Grafana is at the URL."""


class GrafanaAuthError(GrafanaError):
    """Grafana refused the credentials (401) or they lack a permission (403)."""


class GrafanaUnsupported(GrafanaError):
    """The Grafana version is older than the provisioned dashboards need."""


class GrafanaConflict(GrafanaError):
    """Something parkwatch did not create, or that was edited since, is in the way."""
