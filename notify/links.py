"""Links from a notification to the park's Grafana dashboard (also Alertmanager's generatorURL)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from parkwatch.events import Alert

__all__ = ["DashboardLinks"]

BEFORE_MS = 3600 * 1000
"""A link shows the hour before the alert became active..."""
AFTER_MS = 15 * 60 * 1000
"""...up to a quarter of an hour after it resolved (or up to now while it fires)."""


class DashboardLinks:
    """Builds ``<grafana>/d/<uid>?var-park=<park>`` links; none when no Grafana URL is set."""

    def __init__(self, grafana_url: str | None, dashboard_uid: str) -> None:
        self._base = grafana_url.rstrip("/") if grafana_url else None
        self._uid = dashboard_uid

    def park(self, park: str) -> str | None:
        """The park dashboard."""
        if self._base is None or not park:
            return None
        return f"{self._base}/d/{quote(self._uid, safe='')}?{urlencode({'var-park': park})}"

    def alert(self, alert: Alert) -> str | None:
        """The park dashboard around the alert's time (event time, the time the data has)."""
        link = self.park(alert.labels.get("park", ""))
        if link is None:
            return None
        start = alert.active_at_ms - BEFORE_MS
        end = str(alert.resolved_at_ms + AFTER_MS) if alert.resolved_at_ms else "now"
        return f"{link}&{urlencode({'from': start, 'to': end})}"
