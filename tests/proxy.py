"""A tiny aiohttp reverse proxy that serves a real server under a path prefix.

It stands in for the nginx/Traefik rule an operator writes to put InfluxDB at
``https://host/influx/``: requests under ``/{prefix}/`` go upstream with the prefix cut off,
anything else answers 404 (so a client that forgets the prefix fails loudly). Every forwarded
path is recorded, so tests can see which endpoints a client used.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

# Hop-by-hop and length headers are the proxy's own business on each side.
_SKIP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class PrefixProxy:
    """Forwards ``/{prefix}/...`` to ``upstream``; ``url`` is the proxied base URL."""

    def __init__(self, upstream: str, prefix: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.prefix = prefix.strip("/")
        self.forwarded: list[str] = []
        """Upstream paths requested through the proxy, in order."""
        self.refused: list[str] = []
        """Paths requested outside the prefix (answered 404)."""
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL a client is configured with (with a trailing slash, as pasted)."""
        return f"http://127.0.0.1:{self.port}/{self.prefix}/"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        head = f"/{self.prefix}/"
        if not request.path.startswith(head):
            self.refused.append(request.path)
            return web.Response(status=404, text="not behind this proxy prefix")
        path = "/" + request.path[len(head) :]
        self.forwarded.append(path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                f"{self.upstream}{path}",
                params=request.rel_url.query,
                headers=headers,
                data=await request.read(),
            ) as upstream,
        ):
            body = await upstream.read()
            reply = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP_HEADERS}
            return web.Response(status=upstream.status, body=body, headers=reply)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PrefixProxy]:
        """Serve on a free loopback port until the block ends."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # pass gzip on
        await runner.setup()
        # Bind the socket ourselves: the port is then known without aiohttp's private API.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        try:
            yield self
        finally:
            await runner.cleanup()
