"""Notification test builders: alerts, settings, a fake Notifier, a recording HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from notify.dispatcher import Dispatcher
from notify.model import Notification
from parkwatch.events import Alert, AlertState, AlertTransition
from parkwatch.settings import NotifySettings

T0_MS = 1_784_095_325_000  # 2026-07-15 14:02:05 Asia/Shanghai


def alert(
    name: str = "StorageCellHot",
    *,
    park: str = "caohejing",
    device: str = "bess-1",
    kind: str = "storage",
    severity: str = "critical",
    state: AlertState = AlertState.FIRING,
    value: float | None = 47.2,
    fired_at_ms: int = T0_MS,
    resolved_at_ms: int | None = None,
    summary: str | None = None,
    **labels: str,
) -> Alert:
    """An alert as the rules engine emits it (device alert unless ``device`` is empty)."""
    all_labels = {"alertname": name, "park": park, "severity": severity, **labels}
    if device:
        all_labels |= {"kind": kind, "device": device}
    if state is AlertState.RESOLVED and resolved_at_ms is None:
        resolved_at_ms = fired_at_ms + 8 * 60_000
    return Alert(
        labels=all_labels,
        annotations={"summary": summary or f"{park}/{device}: cell {value} degC"},
        state=state,
        value=value,
        active_at_ms=fired_at_ms - 30_000,
        fired_at_ms=fired_at_ms,
        resolved_at_ms=resolved_at_ms,
    )


def resolved(firing: Alert, *, after_ms: int = 8 * 60_000) -> Alert:
    """The same alert series, resolved ``after_ms`` after it fired."""
    fired = firing.fired_at_ms or firing.active_at_ms
    return Alert(
        labels=firing.labels,
        annotations=firing.annotations,
        state=AlertState.RESOLVED,
        value=firing.value,
        active_at_ms=firing.active_at_ms,
        fired_at_ms=fired,
        resolved_at_ms=fired + after_ms,
        fingerprint=firing.fingerprint,
    )


def transition(a: Alert) -> AlertTransition:
    """The transition that led to ``a``'s state."""
    previous = AlertState.PENDING if a.state is AlertState.FIRING else AlertState.FIRING
    return AlertTransition(alert=a, previous=previous, at_ms=a.resolved_at_ms or a.fired_at_ms or 0)


FAST = {
    "retry_initial_s": 0.01,
    "retry_max_s": 0.05,
    "attempt_timeout_s": 2.0,
    "retry_deadline_s": 5.0,
    "rate_limit_per_minute": 0,
}
"""Receiver timings short enough for tests."""


def settings(
    receivers: dict[str, dict[str, Any]],
    route: dict[str, Any] | None = None,
    *,
    grafana_url: str | None = None,
    **timings: Any,
) -> NotifySettings:
    """NotifySettings with ``receivers`` (FAST timings, overridden by ``timings`` and then by
    each receiver's own) and a route tree (default: every receiver, group_wait 0.05 s)."""
    values = {name: {**FAST, **timings, **spec} for name, spec in receivers.items()}
    root = route if route is not None else {"receivers": list(receivers), "group_wait_s": 0.05}
    return NotifySettings.model_validate(
        {"receivers": values, "route": root, "grafana_url": grafana_url}
    )


@dataclass
class FakeNotifier:
    """A Notifier that records what it is given; ``failures`` are raised first, one per call;
    while ``gate`` is clear, sends hang."""

    name: str
    grouped: bool = True
    failures: list[BaseException] = field(default_factory=list)
    gate: asyncio.Event | None = None
    sent: list[Notification] = field(default_factory=list)
    calls: int = 0
    closed: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, notification: Notification) -> None:
        """Record the attempt; fail or hang as configured."""
        self.calls += 1
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(notification)

    async def close(self) -> None:
        """Note the close."""
        self.closed = True

    def alerts(self) -> list[tuple[str, str]]:
        """(alertname/device, state) of every alert delivered, in order."""
        return [
            (f"{a.name}/{a.labels.get('device', '')}", a.state.value)
            for n in self.sent
            for a in n.alerts
        ]


@dataclass
class Request:
    """One request the recording server got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class RecordingServer:
    """An aiohttp server on loopback that records requests and answers ``status``; while
    ``hang`` is set it never answers (until stopped)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.status = 200
        self.hang = False
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Request(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=await request.read(),
            )
        )
        if self.hang:
            await self._release.wait()
        return web.Response(status=self.status, text="ok" if self.status < 300 else "boom")

    def release(self) -> None:
        """Answer the hanging requests, and answer at once from now on."""
        self.hang = False
        self._release.set()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Release hanging requests and stop."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self, path: str | None = None) -> list[bytes]:
        """Bodies received (on ``path``)."""
        return [r.body for r in self.requests if path is None or r.path == path]


def names(notifications: Iterable[Notification]) -> list[list[str]]:
    """Alert names per notification."""
    return [[a.name for a in n.alerts] for n in notifications]


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    """Run the dispatcher as the service does (one task) until the block ends, then cancel it."""
    task = asyncio.create_task(dispatcher.run(), name="notify")
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mean_latency_ms(registry: CollectorRegistry, receiver: str) -> float:
    """Mean firing -> delivered latency of ``receiver`` so far, in ms (for record_property)."""
    labels = {"receiver": receiver}
    count = registry.get_sample_value("parkwatch_notification_latency_seconds_count", labels)
    total = registry.get_sample_value("parkwatch_notification_latency_seconds_sum", labels)
    assert count, f"no delivery measured for {receiver}"
    assert total is not None
    return round(total / count * 1000, 1)
