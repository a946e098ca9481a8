"""A local HTTP server speaking the part of Grafana's HTTP API that provisioning uses.

Grafana itself cannot run here, so this implements exactly the endpoints ``dashboards/
grafana_api.py`` calls, with Grafana's documented answers: 401 for bad credentials (except
``/api/health``), 404 for what is missing, 409 for a taken data-source name or folder uid, 412
``version-mismatch`` when a dashboard is saved over a newer version without ``overwrite``.
Every request is recorded (method, path, JSON body, Authorization header).
"""

from __future__ import annotations

import base64
import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    body: Any
    authorization: str


@dataclass
class FakeGrafana:
    """State and behaviour of the fake; ``url`` is set once started."""

    version: str = "11.3.0"
    token: str | None = "service-account-token"
    basic: tuple[str, str] | None = None
    hide_version: bool = False
    read_only: bool = False
    """Accept the credentials for reads only (a Viewer): writes answer 403."""
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    def writes(self) -> list[Recorded]:
        """The requests that change something."""
        return [r for r in self.requests if r.method != "GET"]

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(middlewares=[self._record_and_authenticate])
        app.router.add_get("/api/health", self._health)
        app.router.add_get("/api/frontend/settings", self._frontend_settings)
        app.router.add_get("/api/datasources/uid/{uid}", self._get_datasource)
        app.router.add_post("/api/datasources", self._create_datasource)
        app.router.add_put("/api/datasources/uid/{uid}", self._update_datasource)
        app.router.add_get("/api/folders/{uid}", self._get_folder)
        app.router.add_post("/api/folders", self._create_folder)
        app.router.add_put("/api/folders/{uid}", self._update_folder)
        app.router.add_get("/api/dashboards/uid/{uid}", self._get_dashboard)
        app.router.add_post("/api/dashboards/db", self._save_dashboard)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorised(self, header: str) -> bool:

        if self.token is not None and header == f"Bearer {self.token}":
            return True
        if self.basic is not None:
            pair = base64.b64encode(":".join(self.basic).encode()).decode()
            return header == f"Basic {pair}"
        return False

    @web.middleware
    async def _record_and_authenticate(
        self, request: web.Request, handler: Any
    ) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        header = request.headers.get("Authorization", "")
        self.requests.append(Recorded(request.method, request.path, body, header))
        if request.path != "/api/health" and not self._authorised(header):
            message = "invalid API key" if header.startswith("Bearer") else "Unauthorized"
            return web.json_response({"message": message}, status=401)
        if self.read_only and request.method != "GET":
            return web.json_response(
                {"message": "Permissions needed: datasources:create"}, status=403
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        answer = {"commit": "0123abc", "database": "ok"}
        if not self.hide_version:
            answer["version"] = self.version
        return web.json_response(answer)

    async def _frontend_settings(self, request: web.Request) -> web.Response:
        return web.json_response({"buildInfo": {"version": self.version, "edition": "Open Source"}})

    async def _get_datasource(self, request: web.Request) -> web.Response:
        found = self.datasources.get(request.match_info["uid"])
        if found is None:
            return web.json_response({"message": "Data source not found"}, status=404)
        return web.json_response(found)

    def _store_datasource(
        self, body: dict[str, Any], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        stored = {k: v for k, v in body.items() if k != "secureJsonData"}
        fields = dict((existing or {}).get("secureJsonFields", {}))
        fields |= dict.fromkeys(body.get("secureJsonData") or {}, True)
        stored |= {
            "id": (existing or {}).get("id") or next(self._ids),
            "orgId": 1,
            "secureJsonFields": fields,
            "readOnly": False,
        }
        self.datasources[stored["uid"]] = stored
        return stored

    async def _create_datasource(self, request: web.Request) -> web.Response:
        body = await request.json()
        if any(ds["name"] == body["name"] for ds in self.datasources.values()):
            return web.json_response(
                {"message": "data source with the same name already exists"}, status=409
            )
        stored = self._store_datasource(body, None)
        return web.json_response(
            {
                "datasource": stored,
                "id": stored["id"],
                "message": "Datasource added",
                "name": stored["name"],
            }
        )

    async def _update_datasource(self, request: web.Request) -> web.Response:
        existing = self.datasources.get(request.match_info["uid"])
        if existing is None:
            return web.json_response({"message": "Data source not found"}, status=404)
        stored = self._store_datasource(await request.json(), existing)
        return web.json_response({"datasource": stored, "message": "Datasource updated"})

    async def _get_folder(self, request: web.Request) -> web.Response:
        found = self.folders.get(request.match_info["uid"])
        if found is None:
            return web.json_response({"message": "folder not found"}, status=404)
        return web.json_response(found)

    async def _create_folder(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["uid"] in self.folders:
            return web.json_response(
                {"message": "a folder with the same uid already exists"}, status=409
            )
        folder = {"id": next(self._ids), "uid": body["uid"], "title": body["title"], "version": 1}
        self.folders[body["uid"]] = folder
        return web.json_response(folder)

    async def _update_folder(self, request: web.Request) -> web.Response:
        folder = self.folders.get(request.match_info["uid"])
        if folder is None:
            return web.json_response({"message": "folder not found"}, status=404)
        body = await request.json()
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            return web.json_response({"message": "the folder has been changed"}, status=412)
        folder |= {"title": body["title"], "version": folder["version"] + 1}
        return web.json_response(folder)

    async def _get_dashboard(self, request: web.Request) -> web.Response:
        found = self.dashboards.get(request.match_info["uid"])
        if found is None:
            return web.json_response({"message": "Dashboard not found"}, status=404)
        return web.json_response(copy.deepcopy(found))

    async def _save_dashboard(self, request: web.Request) -> web.Response:
        body = await request.json()
        dashboard = dict(body["dashboard"])
        uid, folder_uid = dashboard["uid"], body.get("folderUid", "")
        if folder_uid and folder_uid not in self.folders:
            return web.json_response({"message": "folder not found"}, status=400)
        existing = self.dashboards.get(uid)
        stale = (
            existing is not None and dashboard.get("version") != existing["dashboard"]["version"]
        )
        if stale and not body.get("overwrite"):
            return web.json_response(
                {
                    "status": "version-mismatch",
                    "message": "The dashboard has been changed by someone else",
                },
                status=412,
            )
        for other_uid, other in self.dashboards.items():
            if (
                other_uid != uid
                and other["meta"]["folderUid"] == folder_uid
                and other["dashboard"]["title"] == dashboard["title"]
            ):
                return web.json_response(
                    {
                        "status": "name-exists",
                        "message": "A dashboard with the same name in the folder already exists",
                    },
                    status=412,
                )
        version = existing["dashboard"]["version"] + 1 if existing else 1
        dashboard |= {
            "id": existing["dashboard"]["id"] if existing else next(self._ids),
            "version": version,
        }
        self.dashboards[uid] = {
            "dashboard": dashboard,
            "meta": {"folderUid": folder_uid, "version": version, "provisioned": False},
        }
        return web.json_response(
            {
                "id": dashboard["id"],
                "uid": uid,
                "status": "success",
                "version": version,
                "url": f"/d/{uid}/x",
                "slug": "x",
            }
        )
