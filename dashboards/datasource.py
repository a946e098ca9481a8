"""The InfluxDB data source Grafana queries, described once for the API and for file provisioning.

InfluxQL on both InfluxDB lines: against 1.x with the database (and user/password when set),
against 2.x with the bucket's DBRP mapping as the database and the token sent as a custom
``Authorization: Token ...`` header (Grafana's documented way to run InfluxQL on 2.x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from parkwatch.settings import Settings

__all__ = ["DataSourceSpec", "datasource_from_settings"]

MIN_INTERVAL: Final = "10s"
"""The devices report every 10 s or slower: a finer GROUP BY time() only makes empty buckets."""


@dataclass(frozen=True, slots=True)
class DataSourceSpec:
    """One Grafana data source of type ``influxdb`` speaking InfluxQL."""

    name: str
    uid: str
    url: str
    database: str
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    """InfluxDB 2.x token: InfluxQL through the DBRP mapping named ``database``."""

    def public(self) -> dict[str, Any]:
        """Every setting Grafana reads back unchanged (no secrets)."""
        json_data: dict[str, Any] = {
            "dbName": self.database,
            "httpMode": "GET",
            "timeInterval": MIN_INTERVAL,
            "version": "InfluxQL",
        }
        if self.token is not None:
            json_data["httpHeaderName1"] = "Authorization"
        return {
            "name": self.name,
            "uid": self.uid,
            "type": "influxdb",
            "access": "proxy",
            "url": self.url,
            "user": self.username or "",
            "basicAuth": False,
            "isDefault": False,
            "jsonData": json_data,
        }

    def secure(self) -> dict[str, str]:
        """The secrets, as Grafana's ``secureJsonData`` (write-only: never read back)."""
        secrets: dict[str, str] = {}
        if self.token is not None:
            secrets["httpHeaderValue1"] = f"Token {self.token.get_secret_value()}"
        if self.password is not None:
            secrets["password"] = self.password.get_secret_value()
        return secrets

    def body(self) -> dict[str, Any]:
        """The request body for creating or updating the data source."""
        body = self.public()
        secure = self.secure()
        if secure:
            body["secureJsonData"] = secure
        return body

    def matches(self, stored: dict[str, Any]) -> bool:
        """Whether a data source read back from Grafana already is this one.

        Secrets cannot be read back: they match when Grafana says each one is set.
        """
        wanted = self.public()
        for key, value in wanted.items():
            if key == "jsonData":
                have = stored.get("jsonData") or {}
                if any(have.get(k) != v for k, v in value.items()):
                    return False
            elif stored.get(key) != value:
                return False
        set_fields = stored.get("secureJsonFields") or {}
        return all(set_fields.get(key) for key in self.secure())


def datasource_from_settings(settings: Settings) -> DataSourceSpec:
    """The data source for the ``influx`` and ``grafana`` sections of the settings tree."""
    grafana, influx = settings.grafana, settings.influx
    return DataSourceSpec(
        name=grafana.datasource_name,
        uid=grafana.datasource_uid,
        url=grafana.datasource_url or influx.url,
        database=grafana.datasource_database or influx.database,
        username=influx.username,
        password=influx.password,
        token=influx.token,
    )
