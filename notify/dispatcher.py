"""The notification stage: alert transitions in, messages out to every routed receiver.

::

    rules stage --submit(transition)--> [sync, never blocks, never raises]
        ignore pending/inactive; route (routing.py) -> receivers
        per receiver: de-duplicate (SentLog), then
          grouped receivers (chat, email, webhook) -> Grouper batch [group_wait] ---+
          Alertmanager (groups by itself)  --------------------------------------- +-> Lane.put
    Lane (delivery.py), one task per receiver:
        outbox [bounded; full: oldest dropped, counted] -> rate limit -> retries -> Notifier
    Alertmanager re-send task per receiver: every resend_interval, all firing alerts -> Lane.put

Every task is named and owned by the TaskGroup in :meth:`Dispatcher.run`, which the application
runs as one task of its own. Shutdown: :meth:`Dispatcher.drain` flushes open groups and waits
for the lanes to empty (up to a timeout), then the application cancels :meth:`run`, which
closes every notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry

from notify.delivery import Lane
from notify.grouping import Grouper, SentLog
from notify.links import DashboardLinks
from notify.metrics import NotifyMetrics
from notify.model import Notification, alert_fingerprint, make_test_alert
from notify.notifier import Notifier
from notify.receivers import make_notifier
from notify.render import Renderer
from notify.routing import Router
from parkwatch.errors import ConfigError
from parkwatch.events import Alert, AlertState, AlertTransition
from parkwatch.settings import AlertmanagerReceiverSettings, NotifySettings, ParksSettings

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

_NOTIFIED = frozenset({AlertState.FIRING, AlertState.RESOLVED})


class Dispatcher:
    """Routes, groups and delivers alert transitions; see the module docstring.

    ``notifiers`` replaces the adapters built from the settings (tests pass fakes). ``parks``
    gives display names and time zones for messages. Call :meth:`submit` from the event loop's
    thread.
    """

    def __init__(
        self,
        settings: NotifySettings,
        registry: CollectorRegistry,
        *,
        parks: ParksSettings | None = None,
        notifiers: Mapping[str, Notifier] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = NotifyMetrics(registry)
        self._clock = clock
        links = DashboardLinks(settings.grafana_url, settings.dashboard_uid)
        renderer = Renderer(links, parks)
        given = dict(notifiers or {})
        self._lanes: dict[str, Lane] = {}
        for name, receiver in settings.receivers.items():
            notifier = given.get(name) or make_notifier(name, receiver, renderer, links)
            self._lanes[name] = Lane(notifier, receiver, self.metrics, clock=clock)
        self._router = Router(settings.route)
        self._grouper = Grouper(self._hand_over)
        self._sent = {name: SentLog() for name in self._lanes}
        # Firing alerts per Alertmanager receiver, re-sent every resend interval.
        self._resend_s = {
            name: receiver.resend_interval_s
            for name, receiver in settings.receivers.items()
            if isinstance(receiver, AlertmanagerReceiverSettings)
        }
        self._active: dict[str, dict[str, Alert]] = {name: {} for name in self._resend_s}
        self._wake = asyncio.Event()
        self.metrics.add_receivers((name, lane.__len__) for name, lane in self._lanes.items())

    @property
    def receivers(self) -> list[str]:
        """The configured receiver names."""
        return list(self._lanes)

    def submit(self, transition: AlertTransition) -> None:
        """Take one transition from the rules stage: returns at once, never raises."""
        if not self.settings.enabled or transition.alert.state not in _NOTIFIED:
            return
        try:
            self._route(transition.alert, self._clock())
        except Exception:
            # One odd transition must not break the rules stage.
            log.exception("notify: cannot route %s", dict(transition.alert.labels))

    def _route(self, alert: Alert, now: float) -> None:
        fingerprint = alert_fingerprint(alert)
        key = (fingerprint, alert.state, alert.fired_at_ms or alert.active_at_ms)
        done: set[str] = set()
        for route in self._router.routes_for(alert.labels):
            for name in route.receivers:
                if name in done:
                    continue
                done.add(name)
                lane = self._lanes[name]
                active = self._active.get(name)
                if active is not None:
                    if alert.state is AlertState.FIRING:
                        active[fingerprint] = alert
                    else:
                        active.pop(fingerprint, None)
                elif alert.state is AlertState.RESOLVED and not lane.settings.send_resolved:
                    continue
                if not self._sent[name].first_time(key):
                    self.metrics.deduplicated.labels(name).inc()
                    continue
                if lane.notifier.grouped:
                    self._grouper.add(name, route, alert, now)
                    self._wake.set()
                else:
                    lane.put(Notification(name, (alert,), first_seen=now))

    def seed(self, alerts: Iterable[Alert]) -> None:
        """Take the alerts still firing after a restart: Alertmanager receivers re-send them,
        and no receiver is notified of them again."""
        for alert in alerts:
            if alert.state is not AlertState.FIRING:
                continue
            fingerprint = alert_fingerprint(alert)
            key = (fingerprint, alert.state, alert.fired_at_ms or alert.active_at_ms)
            for route in self._router.routes_for(alert.labels):
                for name in route.receivers:
                    self._sent[name].first_time(key)
                    if (active := self._active.get(name)) is not None:
                        active[fingerprint] = alert

    def _hand_over(self, notification: Notification) -> None:
        self._lanes[notification.receiver].put(notification)

    async def run(self) -> None:
        """Run the grouping timer, one lane per receiver and the Alertmanager re-sends."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._run_groups(), name="notify-groups")
                for name, lane in self._lanes.items():
                    group.create_task(lane.run(), name=f"notify-{name}")
                for name in self._active:
                    group.create_task(self._run_resends(name), name=f"notify-{name}-resend")
        finally:
            await self.close()

    async def _run_groups(self) -> None:
        """Flush each group when its group_wait has passed."""
        while True:
            self._wake.clear()
            deadline = self._grouper.next_deadline()
            if deadline is None:
                await self._wake.wait()
            elif (delay := deadline - self._clock()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            self._grouper.flush_due(self._clock())

    async def _run_resends(self, name: str) -> None:
        """Re-send the firing alerts, so Alertmanager keeps them active (see alertmanager.py)."""
        lane = self._lanes[name]
        while True:
            await asyncio.sleep(self._resend_s[name])
            active = self._active[name]
            if active and not lane.has_resend_waiting():
                lane.put(Notification(name, tuple(active.values()), kind="resend"))

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - the service's drain budget
        """Flush open groups now and wait until every lane is empty, at most ``timeout``."""
        flushed = self._grouper.flush_all()
        log.info("notify: draining (%d open groups flushed)", flushed)
        try:
            async with asyncio.timeout(timeout):
                for lane in self._lanes.values():
                    await lane.wait_idle()
        except TimeoutError:
            left = {name: len(lane) for name, lane in self._lanes.items() if len(lane)}
            log.warning(
                "notify: not drained within %.0f s; undelivered messages per receiver: %s",
                timeout,
                left or "(none queued; deliveries in flight)",
            )

    async def test(self, receiver: str) -> float:
        """Send a test message to ``receiver`` (one attempt); return the seconds it took.

        Raises ConfigError for an unknown receiver and NotifyError when delivery fails.
        """
        lane = self._lanes.get(receiver)
        if lane is None:
            known = ", ".join(self._lanes) or "none configured"
            raise ConfigError(f"no notify receiver named {receiver!r} (receivers: {known})")
        alert = make_test_alert(int(time.time() * 1000), receiver)
        started = time.monotonic()
        await lane.attempt(Notification(receiver, (alert,), kind="test"))
        return time.monotonic() - started

    async def close(self) -> None:
        """Close every notifier (connections, threads)."""
        for lane in self._lanes.values():
            try:
                await lane.notifier.close()
            except Exception:
                log.exception("notify %s: error while closing", lane.name)
