"""Plain typed objects passed between pipeline stages (pydantic stays at the boundaries)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeadLetter", "DroppedField", "RawMessage", "Reason"]


class Reason:
    """Why a message was dead-lettered: the ``reason`` label of the dead-letter metric."""

    INVALID_JSON = "invalid_json"
    INVALID_PAYLOAD = "invalid_payload"
    NON_FINITE = "non_finite"
    UNKNOWN_KIND = "unknown_kind"
    INVALID_TOPIC = "invalid_topic"
    TOO_LARGE = "too_large"
    CLOCK_SKEW = "clock_skew"
    REJECTED_BY_SINK = "rejected_by_sink"
    SERIES_LIMIT = "series_limit"
    INTERNAL_ERROR = "internal_error"

    ALL = (
        INVALID_JSON,
        INVALID_PAYLOAD,
        NON_FINITE,
        UNKNOWN_KIND,
        INVALID_TOPIC,
        TOO_LARGE,
        CLOCK_SKEW,
        REJECTED_BY_SINK,
        SERIES_LIMIT,
        INTERNAL_ERROR,
    )


class DroppedField:
    """Why an extra payload field was not stored: the ``reason`` label of its metric."""

    RESERVED_NAME = "reserved_name"
    INVALID_NAME = "invalid_field_name"
    NON_NUMERIC = "non_numeric_extra"

    ALL = (RESERVED_NAME, INVALID_NAME, NON_NUMERIC)


@dataclass(slots=True, frozen=True)
class RawMessage:
    """One MQTT message as received; ``ticket`` settles its broker acknowledgement."""

    topic: str
    payload: bytes
    received_at: float
    ticket: int
    full_size: int | None = None
    """Bytes as received when ``payload`` holds only the start of an oversized payload."""

    @property
    def size(self) -> int:
        """The payload's size as received."""
        return len(self.payload) if self.full_size is None else self.full_size


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A rejected message and why."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: float
    ticket: int
    full_size: int | None = None
    """Bytes as received when ``payload`` holds only the start of an oversized payload."""

    @property
    def size(self) -> int:
        """The payload's size as received."""
        return len(self.payload) if self.full_size is None else self.full_size
