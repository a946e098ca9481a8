"""Configuration: one pydantic-settings tree with a model per subsystem.

Priority, highest first: explicit keyword arguments (tests), environment variables
(``PARKWATCH_`` prefix, ``__`` for nesting, e.g. ``PARKWATCH_MQTT__URL``), the optional config
file (``parkwatch run --config FILE``, TOML or YAML), then the defaults below.
"""

from __future__ import annotations

import re
import ssl
import tomllib
import zlib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
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
from parkwatch.redaction import UrlUserInfo, redact_url, split_user_info

__all__ = [
    "DEFAULT_GROUP_BY",
    "DEFAULT_GROUP_WAIT_S",
    "AlertmanagerReceiverSettings",
    "AppriseReceiverSettings",
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
    "ReceiverSettings",
    "RouteSettings",
    "RulesSettings",
    "Settings",
    "SpoolSettings",
    "StateSettings",
    "WebhookReceiverSettings",
    "WriterSettings",
    "load_settings",
    "read_config_file",
]


class _Section(BaseModel):
    """A settings section: a typo in a key is an error, not silently ignored."""

    # hide_input_in_errors: a rejected value may be a URL holding a password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


def _checked_url(value: str, schemes: tuple[str, ...], shape: str, password: str) -> UrlUserInfo:
    """Validate a server URL without ever quoting it (it may hold a password); return its parts.

    ``password`` names the setting that takes the password instead of the URL.
    """
    parts = split_user_info(value)
    if parts is None or parts.scheme.lower() not in schemes:
        raise ValueError(f"must look like {shape}")
    if parts.ambiguous:
        raise ValueError(
            "the user name or password in the URL holds '/', '?' or '#': percent-encode them "
            f"(%2F, %3F, %23) or give the password as {password}"
        )
    try:
        rest = urlsplit(parts.without_user_info())
        host, _ = rest.hostname, rest.port
    except ValueError:
        raise ValueError(f"must look like {shape}: the port is not a number 0-65535") from None
    if not host:
        raise ValueError(f"must look like {shape}")
    return parts


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
    client: Literal["native", "paho"] = Field(
        default="native",
        description="MQTT client: parkwatch's own asyncio client, or paho-mqtt (for comparison).",
    )
    topic_prefix: str = "parks"
    shared_group: str | None = Field(
        default=None,
        description="Subscribe as $share/<group>/... to spread load over collectors (only with "
        "kpi and rules off: they need all of a park's messages; split by parks instead).",
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
        _checked_url(
            value, ("mqtt", "mqtts"), "mqtt://host:port or mqtts://host:port", "mqtt.password"
        )
        return value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @model_validator(mode="after")
    def _secret_out_of_url(self) -> MqttSettings:
        """Keep a password given in the URL only as a SecretStr, never in the plain URL."""
        parts = split_user_info(self.url)
        if parts is not None and parts.password is not None:
            if self.password is None:
                self.password = SecretStr(parts.decoded_password() or "")
            self.url = parts.without_password()
        if self.password is not None and self.credentials() is None:
            raise ValueError("mqtt.password is set without a user name (mqtt.username or the URL)")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("mqtt.key_file is set without mqtt.cert_file")
        if self.tls:
            self._check_tls_files()
        return self

    def _check_tls_files(self) -> None:
        """Load the TLS files as the connection will, so a bad one fails the start clearly."""
        context = ssl.create_default_context()
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (ssl.SSLError, OSError):
                raise ValueError(
                    f"mqtt.ca_file: {self.ca_file} holds no usable PEM CA certificate"
                ) from None
        if self.cert_file is not None:
            try:
                # An encrypted key would prompt on the terminal: refuse it instead.
                context.load_cert_chain(self.cert_file, self.key_file, password=lambda: b"")
            except (ssl.SSLError, OSError):
                raise ValueError(
                    f"mqtt.cert_file/key_file: {self.cert_file} and {self.key_file or 'its key'} "
                    "do not load as a PEM certificate and its unencrypted private key"
                ) from None

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
        parts = split_user_info(self.url)
        user = self.username or (parts.decoded_user() if parts is not None else None) or None
        if user is None:
            return None
        if self.password is not None:
            return user, self.password.get_secret_value()
        return user, None

    def redacted_url(self) -> str:
        """The URL for display (logs, /healthz): see ``parkwatch.redaction.redact_url``."""
        return redact_url(self.url)


def _partition(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with 0 <= i < N."""
    index, _, count = text.partition("/")
    if not (index.isdecimal() and count.isdecimal()) or not 0 <= int(index) < int(count):
        raise ValueError(f"partition {text!r} must be 'i/N' with 0 <= i < N, e.g. '0/2'")
    return int(index), int(count)


class InfluxSettings(_Section):
    """The InfluxDB the points go to: v1 (``/write``) or v2 (influxdb-client)."""

    url: str = Field(
        default="http://127.0.0.1:8086",
        description="http(s)://[user:password@]host[:port][/path]; a path serves a database "
        "behind a reverse proxy; user and password move into username and password.",
    )
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
        default=True,
        description="v1: CREATE DATABASE at start, and again whenever a write finds it missing "
        "(needs admin rights).",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        shape = "http://host:port or http://host:port/path"
        parts = _checked_url(value, ("http", "https"), shape, "influx.password")
        rest = urlsplit(parts.without_user_info())
        if rest.query or rest.fragment:
            raise ValueError(f"must look like {shape}, without a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> InfluxSettings:
        """Move credentials out of the URL (explicit settings win), then allow one auth method."""
        parts = split_user_info(self.url)
        if parts is not None and parts.user is not None:
            if self.username is None:
                self.username = parts.decoded_user() or None
            if self.password is None and parts.password is not None:
                self.password = SecretStr(parts.decoded_password() or "")
            self.url = parts.without_user_info()
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError(
                "influx.token and influx.username/password (or user:password in influx.url) "
                "are two ways to authenticate: set only one"
            )
        if self.password is not None and self.username is None:
            raise ValueError("influx.password is set without influx.username")
        if self.api == "v2" and self.username is not None:
            raise ValueError(
                "influx.username/password are for api v1; v2 authenticates with influx.token "
                "(InfluxDB 1.8's v2 API takes 'username:password' as the token)"
            )
        return self

    def redacted_url(self) -> str:
        """The URL for display (logs, /healthz, errors): see ``redact_url``."""
        return redact_url(self.url)


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
    flush_interval_s: float = Field(
        default=0.2,
        gt=0,
        description="A batch is written at the latest this long after its first line.",
    )
    max_concurrent_writes: int = Field(default=2, ge=1)
    retry_max_attempts: int = Field(
        default=4, ge=1, description="Attempts before a batch goes to the spool."
    )
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    failure_log_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="While writes, the spool or the database's refusals keep failing, one log "
        "line per this many seconds (with counts), not one per attempt.",
    )


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
    retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before retrying a failed dead-letter write."
    )
    retry_max_s: float = Field(
        default=10.0, gt=0, description="Longest wait between dead-letter write retries."
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


class _ReceiverSettings(_Section):
    """What every notification receiver has: language, bounds, rate limit and retries."""

    language: Literal["zh", "en"] = Field(default="zh", description="Message language.")
    send_resolved: bool = Field(default=True, description="Also notify when an alert resolves.")
    queue_size: int = Field(
        default=256,
        ge=1,
        description="Messages waiting for this receiver; when full the oldest is dropped "
        "(counted as outcome=dropped and logged), so the rules stage never waits.",
    )
    rate_limit_per_minute: float = Field(
        default=20.0,
        ge=0,
        description="Messages per minute at most, 0 for no limit (WeCom and DingTalk robots "
        "accept 20 a minute); excess messages wait in the queue.",
    )
    attempt_timeout_s: float = Field(default=10.0, gt=0, description="One delivery attempt.")
    retry_deadline_s: float = Field(
        default=120.0, gt=0, description="Retry a retryable failure until this long has passed."
    )
    retry_initial_s: float = Field(default=1.0, gt=0, description="First backoff (jittered).")
    retry_max_s: float = Field(default=30.0, gt=0, description="Longest backoff.")


class AlertmanagerReceiverSettings(_ReceiverSettings):
    """A Prometheus Alertmanager: alerts are posted to ``/api/v2/alerts`` and re-sent."""

    type: Literal["alertmanager"]
    url: str = Field(description="Base URL, e.g. http://alertmanager:9093.")
    username: str | None = Field(default=None, description="HTTP basic auth.")
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    resend_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Firing alerts are re-sent this often and posted with endsAt = now + 4x "
        "this, so Alertmanager resolves them by itself only if parkwatch stops sending.",
    )
    rate_limit_per_minute: float = Field(default=0.0, ge=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value).rstrip("/")


class AppriseReceiverSettings(_ReceiverSettings):
    """Any service Apprise speaks: WeCom, DingTalk, Feishu/Lark, email, Slack, Telegram, MQTT..."""

    type: Literal["apprise"]
    url: SecretStr = Field(description="An Apprise URL, e.g. dingtalk://SECRET@TOKEN/.")
    format: Literal["auto", "markdown", "text"] = Field(
        default="auto", description="auto: markdown where the service renders it (or HTML)."
    )


class WebhookReceiverSettings(_ReceiverSettings):
    """A JSON POST (schemas/notify/webhook.schema.json), signed with HMAC-SHA256."""

    type: Literal["webhook"]
    url: str
    secret: SecretStr | None = Field(
        default=None, description="Shared secret; the body's HMAC-SHA256 goes in a header."
    )
    signature_header: str = "X-Parkwatch-Signature"
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra request headers (values are secrets)."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must look like http://host:port/...")
    return value


ReceiverSettings = Annotated[
    AlertmanagerReceiverSettings | AppriseReceiverSettings | WebhookReceiverSettings,
    Field(discriminator="type"),
]

DEFAULT_GROUP_BY = ("park", "alertname")
DEFAULT_GROUP_WAIT_S = 10.0


class RouteSettings(_Section):
    """One node of the routing tree, as in Alertmanager.

    A transition enters at the root and walks the child ``routes`` in order; the first child
    whose ``match`` (exact) and ``match_re`` (anchored regex) all hold takes it, and later
    siblings are tried only if that child has ``continue = true``. A node no child took
    notifies its own ``receivers``. Unset ``receivers``, ``group_by`` and ``group_wait_s``
    are inherited from the parent.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    receivers: list[str] | None = None
    match: dict[str, str] = Field(default_factory=dict, description="label = value")
    match_re: dict[str, str] = Field(default_factory=dict, description="label = regex")
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] | None = Field(
        default=None, description="Labels whose values make one group (default park, alertname)."
    )
    group_wait_s: float | None = Field(
        default=None, ge=0, description="Collect a group's transitions this long (default 10 s)."
    )
    routes: list[RouteSettings] = Field(default_factory=list)

    @field_validator("match_re")
    @classmethod
    def _check_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{label}: invalid regex {pattern!r}: {exc}") from exc
        return value

    def receiver_names(self) -> set[str]:
        """Every receiver named in this node and below."""
        names = set(self.receivers or ())
        for child in self.routes:
            names |= child.receiver_names()
        return names


class NotifySettings(_Section):
    """Alert notifications: receivers by name, and the routing tree that picks them."""

    enabled: bool = True
    grafana_url: str | None = Field(
        default=None,
        description="Grafana base URL for dashboard links, as the people notified reach it "
        "(default: grafana.url; neither: no links).",
    )
    dashboard_uid: str = Field(default="parkwatch-park", description="The park dashboard's uid.")
    receivers: dict[str, ReceiverSettings] = Field(default_factory=dict)
    route: RouteSettings = RouteSettings()

    @field_validator("grafana_url")
    @classmethod
    def _check_grafana_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value).rstrip("/")

    @field_validator("receivers")
    @classmethod
    def _check_names(cls, value: dict[str, ReceiverSettings]) -> dict[str, ReceiverSettings]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"receiver name {name!r}: use letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _check_routes(self) -> NotifySettings:
        unknown = self.route.receiver_names() - set(self.receivers)
        if unknown:
            raise ValueError(f"routes name unknown receivers: {', '.join(sorted(unknown))}")
        return self


class GrafanaSettings(_Section):
    """The Grafana that ``parkwatch dashboards provision`` provisions, and how it sees InfluxDB.

    Authentication: a service-account ``token`` (sent as ``Bearer``), or ``username`` and
    ``password`` (basic auth; also accepted as ``http://user:password@host`` in ``url``). The
    data source Grafana queries is built from the ``influx`` section (v1: database, user and
    password; v2: the token, and InfluxQL through the bucket's DBRP mapping).
    """

    url: str | None = Field(
        default=None, description="Grafana's base URL, e.g. http://127.0.0.1:3000."
    )
    token: SecretStr | None = Field(default=None, description="Service-account token.")
    username: str | None = None
    password: SecretStr | None = None
    org_id: int | None = Field(
        default=None, ge=1, description="Organisation (default: the user's current one)."
    )
    verify_tls: bool = True
    timeout_s: float = Field(default=10.0, gt=0)
    folder: str = Field(default="parkwatch", description="Title of the one dashboard folder.")
    folder_uid: str = Field(default="parkwatch", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    datasource_name: str = "parkwatch InfluxDB"
    datasource_uid: str = Field(default="parkwatch-influxdb", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    datasource_url: str | None = Field(
        default=None,
        description="InfluxDB as Grafana reaches it (default: influx.url).",
    )
    datasource_database: str | None = Field(
        default=None,
        description="InfluxQL database (default: influx.database; v2: the DBRP-mapped name).",
    )

    @field_validator("url", "datasource_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:port")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secret_out_of_url(self) -> GrafanaSettings:
        """Keep credentials given in the URL only as username and SecretStr password."""
        if self.url is None:
            return self
        parts = urlsplit(self.url)
        if parts.username is None:
            return self
        if self.username is None:
            self.username = unquote(parts.username)
        if self.password is None and parts.password is not None:
            self.password = SecretStr(unquote(parts.password))
        netloc = parts.netloc.rsplit("@", 1)[1]
        self.url = parts._replace(netloc=netloc).geturl()
        return self


class Settings(BaseSettings):
    """Everything every subcommand needs, validated at start: one section per subsystem."""

    model_config = SettingsConfigDict(
        env_prefix="PARKWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
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

    @model_validator(mode="after")
    def _whole_parks_for_the_engines(self) -> Settings:
        if self.mqtt.shared_group and (self.kpi.enabled or self.rules.enabled):
            raise ValueError(
                "mqtt.shared_group spreads a park's messages over collectors, so no collector "
                "would see the whole park its KPIs and rules need: split by parks instead "
                "(mqtt.parks, mqtt.partition), or turn kpi.enabled and rules.enabled off"
            )
        return self

    @model_validator(mode="after")
    def _link_to_the_provisioned_grafana(self) -> Settings:
        """Notifications link to the Grafana the dashboards are provisioned to, unless told
        otherwise (``notify.grafana_url``: e.g. its public address behind a proxy)."""
        if self.notify.grafana_url is None and self.grafana.url is not None:
            self.notify.grafana_url = self.grafana.url
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


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a TOML or YAML config file; ``ConfigError`` naming the file if unusable."""
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


def _readable_file(path: Path | None) -> Path | None:
    """``path`` if it can be opened for reading (a TLS file the connection will need)."""
    if path is None:
        return None
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def _describe(exc: ValidationError) -> str:
    """One line per invalid setting, naming it; never the rejected value (it may be a secret)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n" + "\n".join(f"  {line}" for line in lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, the environment and an optional file; fail clearly."""
    file_values = read_config_file(config_file) if config_file else {}

    token = _FILE_VALUES.set(file_values)
    try:
        loaded = Settings(**overrides)
    except ValidationError as exc:
        # from None: a traceback of the ValidationError could quote a rejected secret.
        raise ConfigError(_describe(exc)) from None
    finally:
        _FILE_VALUES.reset(token)
    return loaded
