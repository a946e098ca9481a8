"""The contract devices publish to: topics and one pydantic payload model per device kind.

Topic: ``{prefix}/{park}/{kind}/{device}/telemetry`` (and ``.../status`` for online/offline),
payload: a JSON object with ``ts`` (epoch milliseconds, or an RFC 3339 string) and the fields of
that kind. Simulators import this module so that everything they emit validates here.

Models are strict: a number sent as a string is a wrong type, not something to guess at. Unknown
extra fields are kept when they are finite numbers or booleans (stored as float / bool so that a
field never changes type in InfluxDB); other extras are dropped and counted by the decoder.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "KIND_MODELS",
    "TAG_KEYS",
    "ChargerStatus",
    "ChargerTelemetry",
    "Kind",
    "MicrogridTelemetry",
    "OcppErrorCode",
    "SiteTelemetry",
    "StorageTelemetry",
    "Telemetry",
    "TopicParts",
    "is_reserved_field_name",
    "json_schemas",
    "parse_topic",
    "rfc3339_to_epoch_ms",
    "status_topic",
    "telemetry_topic",
]


class Kind(enum.StrEnum):
    """Device kinds; the value is the topic segment and the InfluxDB measurement."""

    MICROGRID = "microgrid"
    STORAGE = "storage"
    SITE5G = "site5g"
    CHARGER = "charger"


class ChargerStatus(enum.StrEnum):
    """OCPP 1.6 ChargePointStatus, plus OCPP 2.0.1's ``Occupied``."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EVSE = "SuspendedEVSE"
    SUSPENDED_EV = "SuspendedEV"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"


class OcppErrorCode(enum.StrEnum):
    """OCPP 1.6 ChargePointErrorCode."""

    CONNECTOR_LOCK_FAILURE = "ConnectorLockFailure"
    EV_COMMUNICATION_ERROR = "EVCommunicationError"
    GROUND_FAILURE = "GroundFailure"
    HIGH_TEMPERATURE = "HighTemperature"
    INTERNAL_ERROR = "InternalError"
    LOCAL_LIST_CONFLICT = "LocalListConflict"
    NO_ERROR = "NoError"
    OTHER_ERROR = "OtherError"
    OVER_CURRENT_FAILURE = "OverCurrentFailure"
    OVER_VOLTAGE = "OverVoltage"
    POWER_METER_FAILURE = "PowerMeterFailure"
    POWER_SWITCH_FAILURE = "PowerSwitchFailure"
    READER_FAILURE = "ReaderFailure"
    RESET_FAILURE = "ResetFailure"
    UNDER_VOLTAGE = "UnderVoltage"
    WEAK_SIGNAL = "WeakSignal"


# RFC 3339 section 5.6 date-time. Also allowed, as that section permits: a space instead of "T"
# (readability; what Python's str(datetime) and SQL print) and lower-case "t"/"z". Refused: every
# other ISO 8601 form (basic 20261130T022539Z, no seconds, "+0800" or "+08" offsets, a comma
# before the fraction, week or ordinal dates), which datetime.fromisoformat would take.
_RFC3339: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?"
    r"(?:[Zz]|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_to_epoch_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 date-time (sub-millisecond digits are truncated).

    Raises ``ValueError`` for anything else, including a leap second (``:60``), which Go's
    parser (InfluxDB, Telegraf) refuses too.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            f"ts {text[:40]!r} is not an RFC 3339 timestamp (like 2026-11-30T02:25:39.5+08:00)"
        )
    part = {
        name: int(value or 0)
        for name, value in match.groupdict().items()
        if name not in ("sign", "fraction")
    }
    if part["offset_hour"] > 23 or part["offset_minute"] > 59:
        raise ValueError(f"ts {text[:40]!r} has an offset out of range")
    try:
        local = datetime(
            part["year"],
            part["month"],
            part["day"],
            part["hour"],
            part["minute"],
            part["second"],
            tzinfo=UTC,
        )
    except ValueError as exc:  # month 13, 31 April, hour 24, second 60...
        raise ValueError(f"ts {text[:40]!r} is not a valid date and time: {exc}") from exc
    offset = timedelta(hours=part["offset_hour"], minutes=part["offset_minute"])
    # On timedeltas, not datetimes: 0001-01-01T00:00:00+01:00 must not overflow the datetime range.
    since_epoch = local - _EPOCH - (offset if match["sign"] == "+" else -offset)
    millis = int((match["fraction"] or "0")[:3].ljust(3, "0"))
    return since_epoch // timedelta(milliseconds=1) + millis


def _to_epoch_ms(value: Any) -> Any:
    """Accept epoch milliseconds (int) or an RFC 3339 string with an offset; return int ms."""
    if isinstance(value, str):
        return rfc3339_to_epoch_ms(value)
    return value


INT64_MAX: Final = 2**63 - 1
"""InfluxDB integers are signed 64-bit."""

EpochMillis = Annotated[int, BeforeValidator(_to_epoch_ms), Field(ge=0, lt=10**14)]
"""Epoch milliseconds; bounded so a seconds-or-microseconds mix-up is a validation error."""


class Telemetry(BaseModel):
    """Fields every telemetry payload shares."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)

    kind: ClassVar[Kind]
    tag_fields: ClassVar[tuple[str, ...]] = ()
    """Payload fields stored as InfluxDB tags (not fields), in this order."""

    ts: EpochMillis = Field(description="Epoch milliseconds, or an RFC 3339 string with offset.")


class MicrogridTelemetry(Telemetry):
    """A park's (or feeder's) microgrid meter: instantaneous power and cumulative energy."""

    kind: ClassVar[Kind] = Kind.MICROGRID

    pv_kw: float | None = None
    load_kw: float | None = None
    grid_import_kw: float | None = None
    grid_export_kw: float | None = None
    pv_kwh: float | None = Field(default=None, description="Cumulative counter.")
    load_kwh: float | None = Field(default=None, description="Cumulative counter.")
    grid_import_kwh: float | None = Field(default=None, description="Cumulative counter.")
    grid_export_kwh: float | None = Field(default=None, description="Cumulative counter.")
    frequency_hz: float | None = None


class StorageTelemetry(Telemetry):
    """A battery energy storage system."""

    kind: ClassVar[Kind] = Kind.STORAGE

    soc_pct: float | None = None
    soh_pct: float | None = None
    power_kw: float | None = Field(default=None, description="Positive discharge, negative charge.")
    cell_temp_max_c: float | None = None
    cell_temp_min_c: float | None = None
    cell_v_max: float | None = None
    cell_v_min: float | None = None
    charged_kwh: float | None = Field(default=None, description="Cumulative counter.")
    discharged_kwh: float | None = Field(default=None, description="Cumulative counter.")
    capacity_kwh: float | None = Field(default=None, description="Nameplate capacity.")


class SiteTelemetry(Telemetry):
    """A 5G base-station site."""

    kind: ClassVar[Kind] = Kind.SITE5G

    power_kw: float | None = None
    energy_kwh: float | None = Field(default=None, description="Cumulative counter.")
    traffic_gb: float | None = Field(default=None, description="Cumulative data volume counter.")
    prb_util_pct: float | None = None
    active_ues: int | None = Field(default=None, ge=0, le=INT64_MAX)
    sleep_level: int | None = Field(
        default=None, ge=0, le=INT64_MAX, description="0 = none; deeper is higher."
    )
    on_battery: bool | None = Field(default=None, description="True when mains power is lost.")
    cabinet_temp_c: float | None = None


class ChargerTelemetry(Telemetry):
    """One connector of an EV charge point (one message per connector)."""

    kind: ClassVar[Kind] = Kind.CHARGER
    tag_fields: ClassVar[tuple[str, ...]] = ("connector_id",)

    # Not strict for enums: JSON strings must map onto the enum values.
    status: Annotated[ChargerStatus, Field(strict=False)] | None = None
    error_code: Annotated[OcppErrorCode, Field(strict=False)] | None = None
    connector_id: int = Field(default=1, ge=0, lt=1000, description="Stored as tag 'connector'.")
    power_kw: float | None = None
    energy_kwh: float | None = Field(
        default=None, description="Cumulative counter (OCPP Energy.Active.Import.Register)."
    )
    ev_soc_pct: float | None = None
    connector_temp_c: float | None = None


KIND_MODELS: Final[dict[Kind, type[Telemetry]]] = {
    model.kind: model
    for model in (MicrogridTelemetry, StorageTelemetry, SiteTelemetry, ChargerTelemetry)
}


class TopicParts:
    """A parsed device topic."""

    __slots__ = ("channel", "device", "kind", "park")

    def __init__(self, park: str, kind: str, device: str, channel: str) -> None:
        self.park = park
        self.kind = kind
        self.device = device
        self.channel = channel

    def __repr__(self) -> str:
        return f"TopicParts({self.park!r}, {self.kind!r}, {self.device!r}, {self.channel!r})"


TAG_KEYS: Final = frozenset({"park", "device", "connector", "kind"})
"""Tag keys the collector writes. A field of the same name in a measurement makes InfluxQL's
``WHERE park='p1'`` compare the field instead, and match no row of the measurement at all."""


def is_reserved_field_name(name: str) -> bool:
    """Whether an extra payload field must not be stored under ``name``: a tag key, ``time``
    (which InfluxDB 1.x drops from every line), or a name starting with ``_`` (reserved in
    InfluxDB 2/3 and Flux: ``_field``, ``_measurement``, ``_value``, ``_time``...)."""
    return name in TAG_KEYS or name == "time" or name.startswith("_")


CHANNELS: Final = frozenset({"telemetry", "status"})
MAX_ID_LENGTH: Final = 128


def _valid_id(segment: str) -> bool:
    # Backslashes and control characters cannot round-trip through line-protocol tags.
    return (
        0 < len(segment) <= MAX_ID_LENGTH
        and "\\" not in segment
        and segment.isprintable()
        and segment.strip() == segment
    )


def parse_topic(topic: str, prefix: str = "parks") -> TopicParts | str:
    """Split a device topic; return the parts, or a human-readable reason it does not parse."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != prefix:
        return f"expected '{prefix}/{{park}}/{{kind}}/{{device}}/telemetry|status'"
    _, park, kind, device, channel = parts
    if channel not in CHANNELS:
        return f"unknown channel {channel[:40]!r}"
    for name, segment in (("park", park), ("device", device)):
        if not _valid_id(segment):
            return f"{name} id must be 1-{MAX_ID_LENGTH} printable characters without backslash"
    return TopicParts(park, kind, device, channel)


def telemetry_topic(park: str, kind: Kind | str, device: str, prefix: str = "parks") -> str:
    """The topic a device publishes telemetry to."""
    return f"{prefix}/{park}/{kind}/{device}/telemetry"


def status_topic(park: str, kind: Kind | str, device: str, prefix: str = "parks") -> str:
    """The topic of a device's online/offline status (its MQTT last will)."""
    return f"{prefix}/{park}/{kind}/{device}/status"


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every kind's payload, keyed by kind."""
    return {kind.value: model.model_json_schema() for kind, model in KIND_MODELS.items()}
