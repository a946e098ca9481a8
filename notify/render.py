"""Message text: a notification rendered in Chinese or English, as markdown or plain text.

The wording lives in ``notify/templates/<language>/{title,body}.j2`` (Jinja2); this module only
prepares the values: local times in the park's time zone, localised severity and device kind,
the park's display name and the dashboard link. Markdown keeps to what every chat service
renders (bold, links, lists); the same template gives plain text with ``b`` and ``link``
rendered without markup.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from notify.links import DashboardLinks
from notify.model import TEST_ALERTNAME, Notification
from parkwatch.events import Alert
from parkwatch.settings import ParksSettings

if TYPE_CHECKING:
    import jinja2

__all__ = ["MAX_LISTED", "Language", "Message", "Renderer"]

MAX_LISTED = 10
"""Alerts listed per section of one message; the rest are counted ("... and 3 more")."""

Language = Literal["zh", "en"]

SEVERITIES: Mapping[Language, Mapping[str, str]] = {
    "en": {"critical": "Critical", "major": "Major", "minor": "Minor", "warning": "Warning"},
    "zh": {"critical": "严重", "major": "重要", "minor": "次要", "warning": "警告"},
}
KINDS: Mapping[Language, Mapping[str, str]] = {
    "en": {
        "microgrid": "microgrid",
        "storage": "storage",
        "site5g": "5G site",
        "charger": "charger",
    },
    "zh": {"microgrid": "微电网", "storage": "储能", "site5g": "5G 基站", "charger": "充电桩"},
}
CONNECTOR: Mapping[Language, str] = {"en": "connector {}", "zh": "{} 号枪"}
ALERTS: Mapping[Language, str] = {"en": "{} alerts", "zh": "{} 条告警"}
UNITS: Mapping[Language, tuple[str, str, str, str]] = {
    "en": ("d", "h", "min", "s"),
    "zh": ("天", "小时", "分钟", "秒"),
}


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered message: ``body`` is markdown when ``markdown`` is true."""

    title: str
    body: str
    markdown: bool


@dataclass(frozen=True, slots=True)
class _AlertView:
    name: str
    severity: str
    where: str
    summary: str
    value: str
    since: str
    until: str
    lasted: str
    link: str | None


@functools.cache
def _templates() -> jinja2.Environment:
    """The templates, loaded at the first notification (Jinja2 costs ~25 ms of startup)."""
    import jinja2  # noqa: PLC0415

    return jinja2.Environment(
        loader=jinja2.PackageLoader("notify", "templates"),
        # Not HTML: markdown and plain text for chat services (Apprise converts for email).
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


class Renderer:
    """Renders notifications; parks give display names and time zones, links the dashboard."""

    def __init__(self, links: DashboardLinks, parks: ParksSettings | None = None) -> None:
        self._links = links
        self._parks = parks or ParksSettings()

    def render(self, notification: Notification, language: Language, *, markdown: bool) -> Message:
        """The title and body of ``notification`` in ``language``."""

        def bold(text: str) -> str:
            return f"**{text}**" if markdown else text

        def link(label: str, url: str) -> str:
            return f"[{label}]({url})" if markdown else f"{label}: {url}"

        firing, resolved = notification.firing, notification.resolved
        context = {
            "receiver": notification.receiver,
            "test": notification.kind == "test",
            # Counts cover every alert; the lists stop at MAX_LISTED (chat messages are short).
            "firing_count": len(firing),
            "resolved_count": len(resolved),
            "firing": [self._view(a, language) for a in firing[:MAX_LISTED]],
            "resolved": [self._view(a, language) for a in resolved[:MAX_LISTED]],
            "firing_more": max(0, len(firing) - MAX_LISTED),
            "resolved_more": max(0, len(resolved) - MAX_LISTED),
            "headline": self._headline(notification, language),
            "b": bold,
            "link": link,
        }
        templates = _templates()
        title = templates.get_template(f"{language}/title.j2").render(context).strip()
        body = templates.get_template(f"{language}/body.j2").render(context).strip()
        return Message(title=title, body=body, markdown=markdown)

    def _headline(self, notification: Notification, language: Language) -> str:
        alerts = notification.alerts
        names = {a.name for a in alerts}
        parks = {a.labels.get("park", "") for a in alerts}
        what = next(iter(names)) if len(names) == 1 else ALERTS[language].format(len(alerts))
        if len(parks) == 1 and (park := next(iter(parks))):
            return f"{what} · {self._parks.display_name(park)}"
        return what

    def _view(self, alert: Alert, language: Language) -> _AlertView:
        labels = alert.labels
        park = labels.get("park", "")
        zone = ZoneInfo(self._parks.profile(park).timezone)
        start_ms = alert.fired_at_ms or alert.active_at_ms
        where = [self._parks.display_name(park)] if park else []
        if kind := labels.get("kind", ""):
            where.append(KINDS[language].get(kind, kind))
        if device := labels.get("device", ""):
            where.append(device)
        if connector := labels.get("connector", ""):
            where.append(CONNECTOR[language].format(connector))
        severity = labels.get("severity", "")
        end_ms = alert.resolved_at_ms
        return _AlertView(
            name=alert.name,
            severity=SEVERITIES[language].get(severity, severity or "-"),
            where=" ".join(where) or "-",
            summary=alert.annotations.get("summary", ""),
            value=_number(alert.value),
            since=_local_time(start_ms, zone),
            until=_local_time(end_ms, zone, since_ms=start_ms) if end_ms is not None else "",
            lasted=_duration(end_ms - start_ms, language) if end_ms is not None else "",
            link=None if alert.name == TEST_ALERTNAME else self._links.alert(alert),
        )


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"


def _local_time(ms: int, zone: ZoneInfo, *, since_ms: int | None = None) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone)
    if since_ms is not None:
        start = datetime.fromtimestamp(since_ms / 1000, UTC).astimezone(zone)
        if start.date() == moment.date():
            return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(ms: int, language: Language) -> str:
    seconds = max(0, round(ms / 1000))
    day, hour, minute, second = UNITS[language]
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, day), (hours, hour), (minutes, minute)) if n]
    if secs and not days and not hours:
        parts.append(f"{secs} {second}")
    return " ".join(parts[:2]) or f"0 {second}"
