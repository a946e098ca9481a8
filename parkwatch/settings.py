"""Configuration: one pydantic-settings tree with a model per subsystem.

Priority, highest first: explicit keyword arguments (tests), environment variables
(``PARKWATCH_`` prefix, ``__`` for nesting, e.g. ``PARKWATCH_MQTT__URL``), the optional config
file (``parkwatch run --config FILE``, TOML or YAML), then the defaults below.
"""

from __future__ import annotations

import tomllib
import zlib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from parkwatch.errors import ConfigError

__all__ = [
    "DeadLetterSettings",
    "GrafanaSettings",
    "HttpSettings",
    "InfluxSettings",
    "IngestSettings",
    "KpiSettings",
    "MqttSettings",
    "NotifySettings",
    "ParkProfile",
    "ParkTargets",
    "ParksSettings",
    "RulesSettings",
    "Settings",
    "SpoolSettings",
    "StateSettings",
    "WriterSettings",
    "load_settings",
]


class _Section(BaseModel):
    """A settings section: a typo in a key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class MqttSettings(_Section):
    """The broker the collector subscribes to."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="mqtt://[user:password@]host[:port] or mqtts://... for TLS.",
    )
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field(
        default="parkwatch-collector",
        description="Fixed, so the broker keeps our persistent session across restarts.",
    )
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: str = "parks"
    shared_group: str | None = Field(
        default=None, description="Subscribe as $share/<group>/... to spread load over collectors."
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="MQTT 5 session expiry; the broker queues QoS 1 messages this long for us.",
    )
    keepalive_s: int = Field(default=30, ge=5)
    receive_maximum: int = Field(
        default=8192,
        ge=1,
        le=65535,
        description="Unacked QoS 1 messages the broker may send us at once (and our own bound).",
    )
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = Field(default=False, description="Skip hostname verification.")
    reconnect_min_s: float = Field(default=0.2, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    parks: list[str] = Field(
        default_factory=list,
        description="Subscribe only to these parks' topics ({prefix}/{park}/#); empty: all parks.",
    )
    partition: str | None = Field(
        default=None,
        description="'i/N': take only the parks of `parks` whose stable hash modulo N is i "
        "(run N collectors with the same `parks`, each with its own i).",
    )

    @field_validator("parks")
    @classmethod
    def _check_parks(cls, value: list[str]) -> list[str]:
        for park in value:
            if not park or any(char in park for char in "/+#") or park != park.strip():
                raise ValueError(f"{park!r} is not a park id (no '/', '+', '#' or blanks)")
        return value

    @model_validator(mode="after")
    def _check_partition(self) -> MqttSettings:
        if self.partition is not None:
            index, count = _partition(self.partition)
            if not self.parks:
                raise ValueError("partition needs the list of every park in mqtt.parks")
            if not self.assigned_parks():
                raise ValueError(
                    f"partition {index}/{count} of mqtt.parks {self.parks} holds no park"
                )
        return self

    def assigned_parks(self) -> list[str] | None:
        """The parks this collector subscribes to, or None for every park."""
        if not self.parks:
            return None
        if self.partition is None:
            return list(self.parks)
        index, count = _partition(self.partition)
        # crc32, not hash(): stable across processes, and adding a park moves no other park.
        return [park for park in self.parks if zlib.crc32(park.encode()) % count == index]

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return value

    @model_validator(mode="after")
    def _secret_out_of_url(self) -> MqttSettings:
        """Keep a password given in the URL only as a SecretStr, never in the plain URL."""
        parts = urlsplit(self.url)
        if parts.password is not None:
            if self.password is None:
                self.password = SecretStr(unquote(parts.password))
            self.url = self.redacted_url().replace(":***@", "@")
        return self

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts, unless given)."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        """Whether to connect with TLS."""
        return urlsplit(self.url).scheme == "mqtts"

    def credentials(self) -> tuple[str, str | None] | None:
        """Username and password: explicit settings win over those in the URL."""
        parts = urlsplit(self.url)
        user = self.username or (unquote(parts.username) if parts.username else None)
        if user is None:
            return None
        if self.password is not None:
            return user, self.password.get_secret_value()
        return user, unquote(parts.password) if parts.password else None

    def redacted_url(self) -> str:
        """The URL without its password, for logs."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        if parts.username:
            netloc = f"{parts.username}:***@{netloc}"
        return f"{parts.scheme}://{netloc}"


def _partition(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with 0 <= i < N."""
    index, _, count = text.partition("/")
    if not (index.isdecimal() and count.isdecimal()) or not 0 <= int(index) < int(count):
        raise ValueError(f"partition {text!r} must be 'i/N' with 0 <= i < N, e.g. '0/2'")
    return int(index), int(count)


class InfluxSettings(_Section):
    """The InfluxDB the points go to: v1 (``/write``) or v2 (influxdb-client)."""

    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = Field(default="parkwatch", description="v1 database, or v2 bucket.")
    retention_policy: str | None = Field(default=None, description="v1 only.")
    org: str = Field(default="parkwatch", description="v2 only.")
    token: SecretStr | None = Field(default=None, description="v2 token (or v1 'Token' auth).")
    username: str | None = Field(default=None, description="v1 only.")
    password: SecretStr | None = Field(default=None, description="v1 only.")
    timeout_s: float = Field(default=10.0, gt=0)
    gzip: bool = True
    create_database: bool = Field(
        default=True, description="v1: CREATE DATABASE at start if missing (needs admin rights)."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:port")
        return value.rstrip("/")


class IngestSettings(_Section):
    """What the decoder accepts."""

    max_payload_bytes: int = Field(default=64 * 1024, ge=64)
    max_past_s: float = Field(
        default=30 * 24 * 3600, gt=0, description="ts older than now minus this is clock skew."
    )
    max_future_s: float = Field(
        default=300, gt=0, description="ts newer than now plus this is clock skew."
    )


class WriterSettings(_Section):
    """How lines are batched and written."""

    batch_size: int = Field(default=5000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    max_concurrent_writes: int = Field(default=2, ge=1)
    retry_max_attempts: int = Field(
        default=4, ge=1, description="Attempts before a batch goes to the spool."
    )
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)


class SpoolSettings(_Section):
    """The on-disk spool used while InfluxDB is unreachable."""

    directory: Path = Path("var/spool")
    max_bytes: int = Field(default=1024 * 2**20, ge=2**20)
    segment_bytes: int = Field(default=64 * 2**20, ge=2**16)


class DeadLetterSettings(_Section):
    """Where rejected messages are kept."""

    path: Path = Path("var/deadletter.jsonl")
    max_bytes: int = Field(default=64 * 2**20, ge=4096, description="Rotate at this size.")
    backups: int = Field(default=5, ge=1)
    max_payload_chars: int = Field(
        default=4096, ge=64, description="Raw payloads longer than this are truncated."
    )


class HttpSettings(_Section):
    """The /healthz and /metrics endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port.")


class ParkTargets(_Section):
    """A park's green targets: thresholds of the shipped rules, colours of the dashboards."""

    self_sufficiency_pct_min: float = Field(
        default=30.0, ge=0, le=100, description="On-site renewable share of consumption, at least."
    )
    carbon_intensity_t_per_tce_max: float = Field(
        default=3.0,
        gt=0,
        description="tCO2 per tce consumed, at most (pure East China grid power: about 4.48).",
    )
    site5g_kwh_per_gb_max: float = Field(
        default=0.1, gt=0, description="5G site energy per GB of traffic, at most."
    )
    storage_rte_pct_min: float = Field(
        default=85.0,
        ge=0,
        le=100,
        description="Storage round-trip efficiency (1d), at least.",
    )


class ParkProfile(_Section):
    """What parkwatch knows of one park beyond its telemetry."""

    name: str | None = Field(default=None, description="Display name (default: the park id).")
    timezone: str = Field(default="Asia/Shanghai", description="Where the 1d KPI window starts.")
    emission_factor_kg_per_kwh: float = Field(
        default=0.5500,
        ge=0,
        le=2,
        description="Grid emission factor, kgCO2/kWh (default: East China grid 2023, MEE/NBS).",
    )
    targets: ParkTargets = ParkTargets()

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value


class ParksSettings(_Section):
    """Per-park configuration: ``defaults`` for every park, ``overrides`` by park id.

    An override names only what differs, e.g. ``[parks.overrides.lingang.targets]
    self_sufficiency_pct_min = 40``; the rest comes from ``defaults``. Unknown parks use the
    defaults.
    """

    defaults: ParkProfile = ParkProfile()
    overrides: dict[str, ParkProfile] = Field(default_factory=dict)

    def profile(self, park: str) -> ParkProfile:
        """The effective profile of ``park``: its override laid over the defaults."""
        override = self.overrides.get(park)
        if override is None:
            return self.defaults
        merged = _deep_merge(self.defaults.model_dump(), override.model_dump(exclude_unset=True))
        return ParkProfile.model_validate(merged)

    def display_name(self, park: str) -> str:
        """The park's display name, or its id."""
        return self.profile(park).name or park


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class KpiSettings(_Section):
    """The park KPI stage."""

    enabled: bool = True
    lateness_s: float = Field(
        default=60.0, ge=0, description="A window closes this long (park clock) after its end."
    )
    max_gap_s: float = Field(
        default=900.0,
        gt=0,
        description="Counter readings further apart than this are not interpolated across.",
    )


class RulesSettings(_Section):
    """The rules stage."""

    enabled: bool = True
    paths: list[Path] = Field(
        default_factory=list,
        description="Rule files or folders (a JSON list in the environment); empty: the pack.",
    )


class StateSettings(_Section):
    """Where the KPI and rule stages keep the state that survives restarts."""

    directory: Path = Path("var/state")
    snapshot_interval_s: float = Field(
        default=60.0, gt=0, description="A full snapshot this often; a journal in between."
    )
    tick_s: float = Field(
        default=1.0, gt=0, description="Wall-clock ticks that advance the clocks of silent parks."
    )


class NotifySettings(_Section):
    """Alert notifications: receivers and routes."""


class GrafanaSettings(_Section):
    """The Grafana that ``parkwatch dashboards provision`` provisions."""


class Settings(BaseSettings):
    """Everything every subcommand needs, validated at start: one section per subsystem."""

    model_config = SettingsConfigDict(
        env_prefix="PARKWATCH_", env_nested_delimiter="__", extra="forbid"
    )

    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    ingest: IngestSettings = IngestSettings()
    writer: WriterSettings = WriterSettings()
    spool: SpoolSettings = SpoolSettings()
    deadletter: DeadLetterSettings = DeadLetterSettings()
    http: HttpSettings = HttpSettings()
    parks: ParksSettings = ParksSettings()
    kpi: KpiSettings = KpiSettings()
    rules: RulesSettings = RulesSettings()
    state: StateSettings = StateSettings()
    notify: NotifySettings = NotifySettings()
    grafana: GrafanaSettings = GrafanaSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check_influx_auth(self) -> Settings:
        if self.influx.api == "v2" and self.influx.token is None:
            raise ValueError("influx.token is required when influx.api is v2")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then environment, then the config file given to load_settings."""
        file_values = _FILE_VALUES.get() or {}
        return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))


# What load_settings read from the config file, for the one Settings it is building.
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("config_file_values", default=None)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"  {where}: {error['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, the environment and an optional file; fail clearly."""
    file_values = _read_file(config_file) if config_file else {}

    token = _FILE_VALUES.set(file_values)
    try:
        loaded = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    finally:
        _FILE_VALUES.reset(token)
    return loaded
