"""A dashboard under construction: what every parkwatch dashboard shares, and the grid layout.

:class:`Board` wraps the foundation SDK's ``Dashboard`` builder: it stamps the tag, time zone,
refresh and links every parkwatch dashboard carries, numbers panels in order, and lays them out
in rows of 24 grid columns (the SDK's own placement does not wrap a panel that overflows a
row, so positions are given explicitly). :class:`BuildContext` holds what a dashboard is built
from: the data source uid and the parks configuration's targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from dashboards.influxql import AlertAnnotations, InfluxQL, ResultFormat, datasource_ref
from parkwatch.settings import ParkTargets

__all__ = ["GRID_COLUMNS", "TAG", "Board", "BuildContext"]

TAG: Final = "parkwatch"
"""Every dashboard carries it; the dashboard links and the provisioner's ownership check use it."""
GRID_COLUMNS: Final = 24


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What the dashboards are built from (same context, byte-identical JSON)."""

    datasource_uid: str
    targets: ParkTargets
    timezone: str
    """The parks' default time zone: where "today" and "this month" start."""

    @property
    def datasource(self) -> model.DataSourceRef:
        """The InfluxDB data source every panel and variable queries."""
        return datasource_ref(self.datasource_uid)

    def influxql(
        self,
        query: str,
        *,
        ref_id: str = "A",
        result_format: ResultFormat = "time_series",
        alias: str = "",
    ) -> InfluxQL:
        """An InfluxQL target on the data source."""
        return InfluxQL(
            query, self.datasource, ref_id=ref_id, result_format=result_format, alias=alias
        )


class _Built(cogbuilder.Builder[model.Panel]):
    """A panel already built and placed (the SDK's ``with_panel`` takes builders)."""

    def __init__(self, panel: model.Panel) -> None:
        self._panel = panel

    def build(self) -> model.Panel:
        """The panel."""
        return self._panel


class Board:
    """One parkwatch dashboard: add rows of panels and variables, then ``build``."""

    def __init__(
        self,
        context: BuildContext,
        *,
        uid: str,
        title: str,
        description: str,
        time_from: str = "now-24h",
        refresh: str = "1m",
    ) -> None:
        self.context = context
        self._dashboard = (
            builders.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags([TAG])
            .timezone(context.timezone)
            .time(time_from, "now")
            .refresh(refresh)
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .link(
                builders.DashboardLink("parkwatch")
                .type(model.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
        )
        self._next_id = 1
        self._y = 0

    def row(self, height: int, *panels: tuple[int, cogbuilder.Builder[model.Panel]]) -> None:
        """Place ``(width, panel)`` pairs side by side in a new row of ``height`` grid units."""
        widths = [width for width, _ in panels]
        if sum(widths) > GRID_COLUMNS or min(widths) < 1:
            raise ValueError(f"a row holds {GRID_COLUMNS} columns, not {widths}")
        x = 0
        for width, panel in panels:
            built = panel.build()
            built.id_val = self._next_id
            if built.datasource is None:
                built.datasource = self.context.datasource
            built.grid_pos = model.GridPos(h=height, w=width, x=x, y=self._y)
            self._dashboard.with_panel(_Built(built))
            self._next_id += 1
            x += width
        self._y += height

    def park_variable(self, *, multi: bool = True, measurement: str | None = None) -> None:
        """The ``park`` variable: every park seen (in ``measurement``, or anywhere)."""
        source = f' FROM "{measurement}"' if measurement else ""
        self._query_variable(
            "park", "Park", f'SHOW TAG VALUES{source} WITH KEY = "park"', multi=multi
        )

    def device_variable(self, measurement: str, *, label: str = "Device") -> None:
        """The ``device`` variable: the devices of ``measurement`` in the chosen parks."""
        self._query_variable(
            "device",
            label,
            f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device" WHERE "park" =~ /^$park$/',
            multi=True,
        )

    def tag_variable(self, name: str, label: str, measurement: str) -> None:
        """A multi-value variable over one tag of ``measurement``."""
        self._query_variable(
            name, label, f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{name}"', multi=True
        )

    def _query_variable(self, name: str, label: str, query: str, *, multi: bool) -> None:
        variable = (
            builders.QueryVariable(name)
            .label(label)
            .datasource(self.context.datasource)
            .query(query)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(multi)
            .include_all(multi)
        )
        if multi:
            variable = variable.current(
                model.VariableOption(selected=True, text=["All"], value=["$__all"])
            )
        self._dashboard.with_variable(variable)

    def alert_annotations(self, query: str) -> None:
        """Show alert transitions (``alerts`` measurement) as annotations on every time axis."""
        self._dashboard.annotation(
            builders.AnnotationQuery()
            .name("Alerts")
            .datasource(self.context.datasource)
            .enable(True)
            .icon_color("red")
            .target(AlertAnnotations(query, text_column="summary", tags_column="state"))
        )

    def build(self) -> dict[str, Any]:
        """The dashboard as a JSON-able dict (Grafana's dashboard model)."""
        document: dict[str, Any] = _plain(JSONEncoder().default(self._dashboard.build()))
        return document


def _plain(value: Any) -> Any:
    """Resolve nested ``to_json`` objects into plain dicts and lists."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    return value
