"""How HTTP answers from a time-series database map onto the sink errors.

InfluxDB (1.x ``{"error": ...}``, 2.x ``{"message": ...}``) says in words what it refused; the
words are read here, once, into the error's fields, so the writer never parses messages:

* ``partial write: ... dropped=N``: N lines were not stored, the others were (HTTP 400).
* ``field type conflict: input field "f" on measurement "m" is type float, already exists as
  type integer``: the first conflicting field of the request.
* ``max-series-per-database limit exceeded`` / ``max-values-per-tag limit exceeded``: new series
  are refused because a cardinality limit of the server is reached.
* ``database not found`` (404), ``retention policy not found`` (500), ``bucket ... not found``
  (404): the target is missing, the data is fine (`SinkMissing`, retryable).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import orjson

from parkwatch.errors import (
    FieldTypeConflict,
    SinkError,
    SinkMissing,
    SinkRejected,
    SinkUnavailable,
)
from parkwatch.httpheaders import retry_after_seconds

__all__ = ["error_for_status"]

# The data itself was refused: retrying the same lines cannot succeed, isolate them instead.
_REJECTED = frozenset({400, 413, 422})

LIMITS: Final = ("max-series-per-database", "max-values-per-tag")
"""InfluxDB's cardinality limits, as named in its answers and in influxdb.conf."""

_QUOTED = r'"((?:[^"\\]|\\.)*)"'  # a Go %q string
_CONFLICT: Final = re.compile(
    rf"field type conflict: input field {_QUOTED} on measurement {_QUOTED} is type (\w+), "
    r"already exists as type (\w+)"
)
_DROPPED: Final = re.compile(r"\bdropped=(\d+)")
_MISSING: Final = (
    ("retention policy not found", "retention policy"),
    ("database not found", "database"),
)
_BUCKET_MISSING: Final = re.compile(r"bucket .* not found")


def error_text(body: str) -> str:
    """The message of an error answer: its JSON ``error`` or ``message``, else the body."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.strip()
    if isinstance(decoded, dict):
        for key in ("error", "message"):
            if isinstance(decoded.get(key), str):
                return str(decoded[key])
    return body.strip()


def _unquote(text: str) -> str:
    """Undo Go's %q quoting (JSON's escapes cover what names hold in practice)."""
    try:
        value = orjson.loads(f'"{text}"')
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def _rejected(message: str, text: str, status: int, target: str) -> SinkRejected:
    dropped = _DROPPED.search(text)
    conflict = _CONFLICT.search(text)
    limit = next((name for name in LIMITS if f"{name} limit exceeded" in text), None)
    return SinkRejected(
        message,
        status=status,
        target=target,
        dropped=int(dropped.group(1)) if dropped else None,
        conflict=(
            FieldTypeConflict(_unquote(conflict.group(2)), _unquote(conflict.group(1)), conflict[4])
            if conflict
            else None
        ),
        limit=limit,
    )


def error_for_status(status: int, body: str, headers: Mapping[str, str], target: str) -> SinkError:
    """The error to raise for a non-2xx answer."""
    text = error_text(body)
    message = f"{target}: HTTP {status}: {text[:300]}"
    if status in _REJECTED:
        return _rejected(message, text, status, target)
    for words, what in _MISSING:
        if words in text:
            return SinkMissing(message, what=what, status=status, target=target)
    if status == 404 and _BUCKET_MISSING.search(text):
        return SinkMissing(message, what="bucket", status=status, target=target)
    # 401/403/404 (credentials, a wrong path) are treated as unavailable: the data is good,
    # so it is kept (retried, then spooled) until the configuration is fixed.
    return SinkUnavailable(
        message, status=status, target=target, retry_after=retry_after_seconds(headers)
    )
