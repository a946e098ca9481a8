"""Decode and validate: raw MQTT message -> ``Point`` (with its line) or ``DeadLetter``.

This is where a message becomes an InfluxDB point: topic parsed, payload validated by the kind's
pydantic model (a well-formed one by its exact equivalent, the fast path in
``collector/fastpath.py``), ``ts`` checked against the clock, then one line encoded with
measurement = kind, tags ``park`` and ``device`` (and ``connector`` for chargers), fields = the
payload's fields.

Status messages (``.../status``, a device's birth message or MQTT last will) become points of the
``device_status`` measurement with a boolean ``online`` field. A last will (or the bare words
online/offline) carries no ``ts``: the point gets the receive time and is marked
``ts_from_receipt``, so the analytics stage places it at the park's event-time clock instead
(the receive time says nothing about a simulated park or a replayed backlog).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import orjson
from pydantic import ValidationError

from collector.fastpath import FastReader, Reading, fast_readers
from collector.lineproto import FieldValue, LineEncoder
from collector.messages import DeadLetter, DroppedField, RawMessage, Reason
from collector.metrics import Metrics
from parkwatch.points import STATUS_MEASUREMENT, Point
from parkwatch.schema import KIND_MODELS, Kind, Telemetry, is_reserved_field_name, parse_topic
from parkwatch.settings import IngestSettings

__all__ = ["Decoder", "run_decoder"]

_TAG_NAMES: Final = {"connector_id": "connector"}
log = logging.getLogger(__name__)

MAX_FIELD_NAME: Final = 128
ROUTE_CACHE_LIMIT: Final = 100_000
"""Topics whose parse is remembered (a device repeats its topic); the cache starts over past
this. Saves the topic's parse and validation and the escaping of its series on every message."""

_STATUS_WORDS: Final = {b"online": True, b"offline": False, b"true": True, b"false": False}


@dataclass(frozen=True, slots=True)
class _Route:
    """What a valid topic decodes to: its parts, its kind's model and fast path, and for a kind
    without tag fields the series key its lines start with."""

    park: str
    kind: str
    device: str
    channel: str
    model: type[Telemetry]
    reader: FastReader | None
    series: str | None


class Decoder:
    """Turns one raw message into a point or a dead letter; never raises for bad input."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: Metrics,
        *,
        topic_prefix: str = "parks",
        clock: Callable[[], float] = time.time,
        fast_path: bool = True,
    ) -> None:
        """``fast_path=False`` validates every payload with pydantic (the reference that
        ``tests/collector/test_fastpath.py`` holds the fast path to)."""
        self._settings = settings
        self._metrics = metrics
        self._prefix = topic_prefix
        self._clock = clock
        self._models = {kind.value: model for kind, model in KIND_MODELS.items()}
        self._fast = fast_readers(self._models) if fast_path else {}
        self._encoder = LineEncoder()
        self._routes: dict[str, _Route | tuple[str, str]] = {}

    def decode(self, raw: RawMessage) -> Point | DeadLetter:
        """Validate ``raw``; the result carries the message's ack ticket either way."""
        if raw.size > self._settings.max_payload_bytes:
            return self._reject(
                raw,
                Reason.TOO_LARGE,
                f"{raw.size} bytes > limit {self._settings.max_payload_bytes}",
            )
        route = self._routes.get(raw.topic) or self._route(raw.topic)
        if type(route) is tuple:
            return self._reject(raw, *route)
        assert isinstance(route, _Route)
        if route.channel == "status":
            return self._status(raw, route.park, route.kind, route.device)
        # Most payloads are well formed: read those without pydantic (collector/fastpath.py
        # says why, and that the result is the same); the rest are validated by the model.
        reading = route.reader.read(raw.payload) if route.reader is not None else None
        if reading is None:
            try:
                telemetry = route.model.model_validate_json(raw.payload)
            except ValidationError as exc:
                return self._invalid(raw, exc)
            reading = _reading(telemetry)
        return self._point(raw, reading, route)

    def _route(self, topic: str) -> _Route | tuple[str, str]:
        """What ``topic`` decodes to, or (reason, detail) to refuse it; remembered (bounded)."""
        if len(self._routes) >= ROUTE_CACHE_LIMIT:
            self._routes.clear()
        parts = parse_topic(topic, self._prefix)
        route: _Route | tuple[str, str]
        if isinstance(parts, str):
            route = (Reason.INVALID_TOPIC, parts)
        elif (model := self._models.get(parts.kind)) is None:
            route = (Reason.UNKNOWN_KIND, f"kind {parts.kind[:40]!r} is not one of {list(Kind)}")
        else:
            # A kind without tag fields has one series per topic: escaped once, here.
            tags = (("device", parts.device), ("park", parts.park))
            series = None if model.tag_fields else self._encoder.series(parts.kind, tags)
            reader = self._fast.get(parts.kind)
            route = _Route(
                parts.park, parts.kind, parts.device, parts.channel, model, reader, series
            )
        self._routes[topic] = route
        return route

    def _point(self, raw: RawMessage, reading: Reading, route: _Route) -> Point | DeadLetter:
        park, kind, device = route.park, route.kind, route.device
        ts_ms, fields, tag_fields, extra = reading
        skew = self._skew(ts_ms)
        if skew is not None:
            return self._reject(raw, Reason.CLOCK_SKEW, skew)
        if extra:
            rejected = self._take_extras(extra, fields)
            if rejected is not None:
                return self._reject(raw, Reason.NON_FINITE, rejected)
        if not fields:
            return self._reject(raw, Reason.INVALID_PAYLOAD, "no fields besides ts")
        connector = ""
        series = route.series
        if series is None:
            tags = [("device", device), ("park", park)]
            tags += [(_TAG_NAMES.get(name, name), value) for name, value in tag_fields]
            tags.sort()
            connector = next((value for key, value in tags if key == "connector"), "")
            series = self._encoder.series(kind, tuple(tags))
        line = self._encoder.line(series, fields, ts_ms)
        return Point(
            park, kind, device, ts_ms, fields, line, raw.ticket, connector,
            received_at=raw.received_at,
        )  # fmt: skip

    def _take_extras(self, extra: dict[str, object], fields: dict[str, FieldValue]) -> str | None:
        """Keep finite numeric and boolean extras (numbers as float); None, or why to reject."""
        for name, value in extra.items():
            if is_reserved_field_name(name):
                # Dropped, not dead-lettered: the rest of the reading is good, as Telegraf keeps
                # a metric whose field it cannot store. Stored, it would hide the tag of the same
                # name from InfluxQL for the whole measurement.
                self._metrics.fields_dropped.labels(DroppedField.RESERVED_NAME).inc()
            elif not _valid_field_name(name):
                # Line protocol cannot carry it (empty, control characters, backslash).
                self._metrics.fields_dropped.labels(DroppedField.INVALID_NAME).inc()
            elif isinstance(value, bool):
                fields[name] = value
            elif isinstance(value, int | float):
                try:
                    number = float(value)
                except OverflowError:  # an integer beyond the float range
                    number = math.inf
                if not math.isfinite(number):
                    return f"field {name[:40]!r} is not a finite number"
                fields[name] = number
            else:
                # Like Telegraf's JSON parser: non-numeric extras are ignored, but counted.
                self._metrics.fields_dropped.labels(DroppedField.NON_NUMERIC).inc()
        return None

    def _status(self, raw: RawMessage, park: str, kind: str, device: str) -> Point | DeadLetter:
        body = raw.payload.strip()
        online = _STATUS_WORDS.get(body.lower())
        ts_ms = round(raw.received_at * 1000)
        from_receipt = True
        if online is None:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return self._reject(raw, Reason.INVALID_JSON, str(exc))
            if not isinstance(data, dict) or not isinstance(data.get("online"), bool):
                return self._reject(raw, Reason.INVALID_PAYLOAD, "status needs a boolean 'online'")
            online = data["online"]
            if "ts" in data:
                ts = data["ts"]
                if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
                    return self._reject(raw, Reason.INVALID_PAYLOAD, "status ts must be epoch ms")
                skew = self._skew(ts)
                if skew is not None:
                    return self._reject(raw, Reason.CLOCK_SKEW, skew)
                ts_ms = ts
                from_receipt = False
        tags = (("device", device), ("kind", kind), ("park", park))
        fields: dict[str, FieldValue] = {"online": online}
        line = self._encoder.encode(STATUS_MEASUREMENT, tags, fields, ts_ms)
        return Point(
            park,
            STATUS_MEASUREMENT,
            device,
            ts_ms,
            fields,
            line,
            raw.ticket,
            device_kind=kind,
            ts_from_receipt=from_receipt,
            received_at=raw.received_at,
        )

    def _skew(self, ts_ms: int) -> str | None:
        offset = ts_ms / 1000 - self._clock()
        if offset > self._settings.max_future_s:
            return f"ts is {offset:.0f} s in the future (limit {self._settings.max_future_s:.0f} s)"
        if -offset > self._settings.max_past_s:
            return f"ts is {-offset:.0f} s in the past (limit {self._settings.max_past_s:.0f} s)"
        return None

    def _invalid(self, raw: RawMessage, exc: ValidationError) -> DeadLetter:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            reason = Reason.INVALID_JSON
        elif any(error["type"] == "finite_number" for error in errors):
            reason = Reason.NON_FINITE
        else:
            reason = Reason.INVALID_PAYLOAD
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in errors[:5]
        )
        return self._reject(raw, reason, detail)

    def _reject(self, raw: RawMessage, reason: str, detail: str) -> DeadLetter:
        return _dead_letter(raw, reason, detail)


def _reading(telemetry: Telemetry) -> Reading:
    """A validated model as the fast path reads a payload (see ``collector.fastpath.Reading``)."""
    fields: dict[str, FieldValue] = {}
    tags: list[tuple[str, str]] = []
    tag_fields = telemetry.tag_fields
    # __dict__ holds the declared fields only; extras are checked separately (_take_extras).
    for name, value in telemetry.__dict__.items():
        if value is None or name == "ts":
            continue
        if name in tag_fields:
            tags.append((name, str(value)))
        else:
            # Store enum members (OCPP status, error code) as their plain string value.
            fields[name] = value.value if isinstance(value, enum.Enum) else value
    return telemetry.ts, fields, tags, telemetry.__pydantic_extra__


def _dead_letter(raw: RawMessage, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(
        raw.topic, raw.payload, reason, detail, raw.received_at, raw.ticket, raw.full_size
    )


class _SeenBugs:
    """Remembers where exceptions were raised, to log each distinct one only once."""

    MAX: Final = 1000  # distinct places remembered; beyond that, nothing more is logged

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()

    def first(self, exc: BaseException) -> bool:
        """Whether this is the first exception of its type raised at its place."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
        key = (type(exc).__qualname__, *where)
        if key in self._seen or len(self._seen) >= self.MAX:
            return False
        self._seen.add(key)
        return True


def _valid_field_name(name: str) -> bool:
    return 0 < len(name) <= MAX_FIELD_NAME and name.isprintable() and "\\" not in name


async def run_decoder(
    decoder: Decoder,
    inbox: asyncio.Queue[RawMessage],
    points: asyncio.Queue[Point],
    dead: asyncio.Queue[DeadLetter],
    observers: Sequence[Callable[[Point], None]] = (),
) -> None:
    """Stage loop. Full output queues block here, which fills ``inbox``, which pauses the MQTT
    reader: back-pressure reaches the broker, which holds the unacked QoS 1 messages."""
    bugs = _SeenBugs()
    while True:
        # The queue methods without a coroutine while there is something (room) there: a
        # third of a hand-off's cost, per message (never a yield to the loop either way).
        raw = inbox.get_nowait() if not inbox.empty() else await inbox.get()
        try:
            result = decoder.decode(raw)
        except Exception as exc:  # a decoder bug must cost one message, not the collector
            # Filed as internal_error, not as the device's fault; one traceback per distinct
            # bug (a bug usually hits every message of a kind: a traceback each would flood).
            if bugs.first(exc):
                log.exception(
                    "decoder bug on a message from %r; further messages it hits are "
                    "dead-lettered as %s without a traceback",
                    raw.topic[:200],
                    Reason.INTERNAL_ERROR,
                )
            result = _dead_letter(raw, Reason.INTERNAL_ERROR, f"decoder error: {exc!r}")
        if isinstance(result, Point):
            for observe in observers:
                try:
                    observe(result)
                except Exception:  # an observer's bug must not stop ingestion
                    log.exception("point observer failed")
            if points.full():
                await points.put(result)
            else:
                points.put_nowait(result)
        else:
            await dead.put(result)
        inbox.task_done()
