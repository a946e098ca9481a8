"""How HTTP answers from a time-series database map onto the sink errors."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from time import time

from parkwatch.errors import SinkError, SinkRejected, SinkUnavailable

__all__ = ["error_for_status", "retry_after_seconds"]

# The data itself was refused: retrying the same lines cannot succeed, isolate them instead.
_REJECTED = frozenset({400, 413, 422})


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date)."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def error_for_status(status: int, body: str, headers: Mapping[str, str], target: str) -> SinkError:
    """The error to raise for a non-2xx answer."""
    message = f"{target}: HTTP {status}: {body[:300].strip()}"
    if status in _REJECTED:
        return SinkRejected(message, status=status, target=target)
    # 401/403/404 (credentials, missing database) are treated as unavailable: the data is good,
    # so it is kept (retried, then spooled) until the configuration is fixed.
    return SinkUnavailable(
        message, status=status, target=target, retry_after=retry_after_seconds(headers)
    )
