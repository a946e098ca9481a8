"""Configuration: one pydantic-settings tree with a model per subsystem.

Priority, highest first: explicit keyword arguments (tests), environment variables
(``PARKWATCH_`` prefix, ``__`` for nesting, e.g. ``PARKWATCH_MQTT__URL``), the optional config
file (``parkwatch run --config FILE``, TOML or YAML), then the defaults below.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

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
    "HttpSettings",
    "InfluxSettings",
    "IngestSettings",
    "MqttSettings",
    "Settings",
    "SpoolSettings",
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
    max_inflight_bytes: int = Field(
        default=64 * 2**20,
        ge=2**16,
        description="Payload bytes received and not yet settled; beyond it we stop reading.",
    )
    reconnect_min_s: float = Field(default=0.2, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    takeover_backoff_max_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait before reconnecting after another client took our session.",
    )
    retained_state_file: Path = Field(
        default=Path("var/retained-seen.bin"),
        description="Digests of retained messages already handled, so a restart skips them.",
    )
    retained_state_max_topics: int = Field(
        default=200_000, ge=1, description="Retained topics remembered (oldest forgotten first)."
    )

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


class Settings(BaseSettings):
    """Everything the collector needs, validated at start."""

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
