"""InfluxQL queries for Grafana's InfluxDB data source, as typed foundation-SDK objects.

The foundation SDK ships query types for Prometheus, Loki, Elasticsearch and others, but none
for InfluxDB; its extension point is :class:`cog.variants.Dataquery` (anything with
``to_json``), so the InfluxQL target is defined here. Every query is a raw InfluxQL string
(``rawQuery``) because that is what runs unchanged on InfluxDB 1.x, 2.x through DBRP and 3.x.

Conventions that the query checks in ``tests/dashboards`` rely on: every expression of the outer
``SELECT`` carries an ``AS "alias"`` (the column the panel expects), and tags a panel splits by
are named in ``GROUP BY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as model

__all__ = [
    "AlertAnnotationTarget",
    "AlertAnnotations",
    "InfluxQL",
    "InfluxQLQuery",
    "ResultFormat",
    "datasource_ref",
    "park_filter",
]

ResultFormat = Literal["time_series", "table"]
DATASOURCE_TYPE = "influxdb"


def datasource_ref(uid: str) -> model.DataSourceRef:
    """A reference to the provisioned InfluxDB data source."""
    return model.DataSourceRef(type_val=DATASOURCE_TYPE, uid=uid)


def park_filter(variable: str = "park") -> str:
    """The WHERE term matching the park (or parks) chosen in a template variable."""
    return f'"park" =~ /^${variable}$/'


@dataclass(frozen=True, slots=True)
class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL target of a panel."""

    ref_id: str
    query: str
    datasource: model.DataSourceRef
    result_format: ResultFormat = "time_series"
    alias: str = ""
    """Legend pattern, e.g. ``$tag_park``; empty: Grafana's default (measurement.column)."""

    def to_json(self) -> dict[str, object]:
        """The target as Grafana's InfluxDB data source stores it."""
        payload: dict[str, object] = {
            "datasource": self.datasource.to_json(),
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format,
        }
        if self.alias:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder of an :class:`InfluxQLQuery`, for ``panel.with_target``."""

    def __init__(
        self,
        query: str,
        datasource: model.DataSourceRef,
        *,
        ref_id: str = "A",
        result_format: ResultFormat = "time_series",
        alias: str = "",
    ) -> None:
        self._query = InfluxQLQuery(
            ref_id=ref_id,
            query=" ".join(query.split()),  # one line, as the query editor shows it
            datasource=datasource,
            result_format=result_format,
            alias=alias,
        )

    def build(self) -> InfluxQLQuery:
        """The query."""
        return self._query


class AlertAnnotationTarget(model.AnnotationTarget):
    """The target of an InfluxDB annotation query: the alert transitions of the chosen parks.

    Grafana's InfluxDB plugin reads ``query`` with ``textColumn``/``tagsColumn`` from the
    annotation's target (its ``prepareAnnotation`` migrates older top-level fields there).
    """

    def __init__(self, query: str, *, text_column: str, tags_column: str) -> None:
        super().__init__()
        self.query = " ".join(query.split())
        self.text_column = text_column
        self.tags_column = tags_column

    def to_json(self) -> dict[str, object]:
        """The target as Grafana's InfluxDB annotation editor stores it."""
        return {
            "fromAnnotations": True,
            "query": self.query,
            "rawQuery": True,
            "refId": "Anno",
            "tagsColumn": self.tags_column,
            "textColumn": self.text_column,
        }


class AlertAnnotations(cogbuilder.Builder[model.AnnotationTarget]):
    """Builder of an :class:`AlertAnnotationTarget`, for ``AnnotationQuery.target``."""

    def __init__(self, query: str, *, text_column: str, tags_column: str) -> None:
        self._target = AlertAnnotationTarget(
            query, text_column=text_column, tags_column=tags_column
        )

    def build(self) -> AlertAnnotationTarget:
        """The annotation target."""
        return self._target
