"""The Grafana HTTP API through ``grafana-client``: the adapter behind ``provision.GrafanaApi``.

Library errors become ``parkwatch.errors``' Grafana branch here, each a one-line message naming
the URL: connection refused or timed out, or no Grafana answering (``GrafanaUnreachable``);
401/403 (``GrafanaAuthError``); 409/412, e.g. a data source name taken or a dashboard saved
meanwhile (``GrafanaConflict``); anything else (``GrafanaError``).

Endpoints used: ``GET /api/health`` (version; ``GET /api/frontend/settings`` when the health
endpoint hides it), ``GET|PUT /api/datasources/uid/{uid}``, ``POST /api/datasources``,
``GET|PUT /api/folders/{uid}``, ``POST /api/folders``, ``GET /api/dashboards/uid/{uid}``,
``POST /api/dashboards/db``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
from grafana_client import GrafanaApi as _ClientApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.build import build_all, context_from_settings
from dashboards.datasource import datasource_from_settings
from dashboards.provision import Report, provision
from parkwatch.errors import GrafanaAuthError, GrafanaConflict, GrafanaError, GrafanaUnreachable
from parkwatch.settings import GrafanaSettings, Settings

__all__ = ["GrafanaHttpApi", "provision_from_settings"]

T = TypeVar("T")


class GrafanaHttpApi:
    """Grafana at ``url`` with the credentials of ``settings`` (token, or user and password)."""

    def __init__(self, settings: GrafanaSettings, url: str | None = None) -> None:
        base = (url or settings.url or "").rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GrafanaError(f"not a Grafana URL: {base!r} (use http://host:3000)")
        self.url = base
        auth: str | tuple[str, str] | None = None
        if settings.token is not None:
            auth = settings.token.get_secret_value()
        elif settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = (settings.username, password)
        prefix = parts.path.strip("/")
        self._client = _ClientApi(
            auth=auth,
            host=parts.hostname,
            port=parts.port,
            url_path_prefix=f"{prefix}/" if prefix else "",
            protocol=parts.scheme,
            verify=settings.verify_tls,
            timeout=settings.timeout_s,
            organization_id=settings.org_id,
        ).client

    def _call(self, what: str, request: Callable[[], T], *, missing: T | None = None) -> T:
        """Run one request; translate what can go wrong into one-line errors.

        With ``missing`` set, a 404 answer returns it instead of raising.
        """
        try:
            return request()
        except GrafanaClientError as exc:
            if missing is not None and exc.status_code == 404:
                return missing
            raise _translate(self.url, what, exc) from exc
        except requests.exceptions.Timeout as exc:
            raise GrafanaUnreachable(f"Grafana at {self.url}: {what}: timed out") from exc
        except requests.exceptions.ConnectionError as exc:
            raise GrafanaUnreachable(f"cannot reach Grafana at {self.url}: {_reason(exc)}") from exc
        except GrafanaException as exc:
            raise _translate(self.url, what, exc) from exc
        except ValueError as exc:  # a body that is not JSON: not Grafana's API
            raise GrafanaUnreachable(
                f"{self.url} does not answer like Grafana ({what}: not JSON)"
            ) from exc

    def _get(self, path: str) -> Any:
        return self._call(f"GET /api{path}", lambda: self._client.GET(path))

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        absent: dict[str, Any] = {}
        found = self._call(f"GET /api{path}", lambda: self._client.GET(path), missing=absent)
        if found is absent:
            return None
        if not isinstance(found, dict):
            raise GrafanaUnreachable(f"{self.url} does not answer like Grafana (GET /api{path})")
        return found

    def version(self) -> str:
        """Grafana's version, from ``/api/health`` or, when hidden there, the build info."""
        health = self._get("/health")
        if not isinstance(health, dict) or "database" not in health:
            raise GrafanaUnreachable(f"{self.url} does not answer like Grafana (GET /api/health)")
        version = health.get("version")
        if not version:  # [auth.anonymous] hide_version: ask with our credentials
            settings = self._get("/frontend/settings")
            version = (settings.get("buildInfo") or {}).get("version") if settings else None
        if not version:
            raise GrafanaError(f"Grafana at {self.url} does not tell its version")
        return str(version)

    def get_datasource(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/datasources/uid/{uid}``."""
        return self._get_or_none(f"/datasources/uid/{quote(uid)}")

    def create_datasource(self, body: dict[str, Any]) -> None:
        """``POST /api/datasources``."""
        self._call("POST /api/datasources", lambda: self._client.POST("/datasources", json=body))

    def update_datasource(self, uid: str, body: dict[str, Any]) -> None:
        """``PUT /api/datasources/uid/{uid}``."""
        path = f"/datasources/uid/{quote(uid)}"
        self._call(f"PUT /api{path}", lambda: self._client.PUT(path, json=body))

    def get_folder(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/folders/{uid}``."""
        return self._get_or_none(f"/folders/{quote(uid)}")

    def create_folder(self, uid: str, title: str) -> None:
        """``POST /api/folders``."""
        body = {"uid": uid, "title": title}
        self._call("POST /api/folders", lambda: self._client.POST("/folders", json=body))

    def update_folder(self, uid: str, title: str, version: int) -> None:
        """``PUT /api/folders/{uid}`` (rename), with the version read."""
        path = f"/folders/{quote(uid)}"
        body = {"title": title, "version": version, "overwrite": False}
        self._call(f"PUT /api{path}", lambda: self._client.PUT(path, json=body))

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        """``GET /api/dashboards/uid/{uid}``."""
        return self._get_or_none(f"/dashboards/uid/{quote(uid)}")

    def save_dashboard(
        self, dashboard: dict[str, Any], *, folder_uid: str, overwrite: bool, message: str
    ) -> None:
        """``POST /api/dashboards/db``."""
        body = {
            "dashboard": dashboard,
            "folderUid": folder_uid,
            "overwrite": overwrite,
            "message": message,
        }
        self._call(
            f"POST /api/dashboards/db ({dashboard.get('uid')})",
            lambda: self._client.POST("/dashboards/db", json=body),
        )


def _message(exc: GrafanaException) -> str:
    response = exc.response
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return " ".join(str(response or "").split())[:200]


def _translate(url: str, what: str, exc: GrafanaException) -> GrafanaError:
    status = exc.status_code
    detail = f"HTTP {status}: {_message(exc)}" if _message(exc) else f"HTTP {status}"
    if status == 401:
        return GrafanaAuthError(
            f"Grafana at {url} refused the credentials ({detail}): check grafana.token, "
            "or grafana.username and grafana.password"
        )
    if status == 403:
        return GrafanaAuthError(
            f"Grafana at {url}: {what}: permission denied ({detail}); provisioning needs "
            "an Admin (data source) and Editor (folder, dashboards) account or token"
        )
    if status in (409, 412):
        return GrafanaConflict(f"Grafana at {url}: {what}: {detail}")
    return GrafanaError(f"Grafana at {url}: {what}: {detail}")


def _reason(exc: requests.exceptions.ConnectionError) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host"):
        if known in text:
            return known.lower()
    return " ".join(text.split())[:160]


def provision_from_settings(settings: Settings, *, force: bool = False) -> Report:
    """Provision the Grafana at ``grafana.url`` with the data source, folder and dashboards that
    ``settings`` describe (``parkwatch dashboards provision``, and the demo)."""
    grafana = settings.grafana
    return provision(
        GrafanaHttpApi(grafana),
        datasource=datasource_from_settings(settings),
        folder_uid=grafana.folder_uid,
        folder_title=grafana.folder,
        dashboards=build_all(context_from_settings(settings)),
        force=force,
    )
