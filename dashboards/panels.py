"""Panel constructors and threshold colours shared by the parkwatch dashboards.

Thin functions over the foundation SDK's panel builders, so each dashboard module reads as a
list of questions and queries. Thresholds are coloured from a target: ``at_least`` (red below,
green from the target up: self-sufficiency, round-trip efficiency) or ``at_most`` (green below,
red from the target up: carbon intensity, 5G kWh per GB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.influxql import InfluxQL

__all__ = [
    "GREEN",
    "KG_PER_KWH",
    "KWH_PER_GB",
    "RED",
    "T_PER_TCE",
    "Thresholds",
    "at_least",
    "at_most",
    "band",
    "bar_gauge",
    "link_to_park",
    "stat_panel",
    "state_timeline",
    "table_panel",
    "text_states",
    "timeseries_panel",
]

T_PER_TCE: Final = "suffix: tCO2/tce"
KG_PER_KWH: Final = "suffix: kgCO2/kWh"
KWH_PER_GB: Final = "suffix: kWh/GB"
GREEN: Final = "green"
RED: Final = "red"

Thresholds = builders.ThresholdsConfig
PARK_DASHBOARD_LINK: Final = "/d/parkwatch-park?var-park=${__value.raw}&${__url_time_range}"


def _steps(*steps: tuple[float | None, str]) -> Thresholds:
    return (
        builders.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def at_least(target: float) -> Thresholds:
    """Red below ``target``, green from it up."""
    return _steps((None, RED), (target, GREEN))


def at_most(target: float) -> Thresholds:
    """Green below ``target``, red from it up."""
    return _steps((None, GREEN), (target, RED))


def band(low: float, high: float) -> Thresholds:
    """Green inside ``[low, high)``, red outside."""
    return _steps((None, RED), (low, GREEN), (high, RED))


def neutral() -> Thresholds:
    """No judgement: one colour."""
    return _steps((None, GREEN))


def timeseries_panel(
    title: str,
    description: str,
    *targets: InfluxQL,
    unit: str,
    thresholds: Thresholds | None = None,
    bars: bool = False,
    stacked: bool = False,
    time_from: str | None = None,
) -> timeseries.Panel:
    """Values over time; with ``thresholds`` the target is drawn as a dashed line."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .fill_opacity(25 if stacked or bars else 10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    if time_from is not None:
        panel = panel.time_from(time_from)
    return panel


def stat_panel(
    title: str,
    description: str,
    target: InfluxQL,
    *,
    unit: str,
    thresholds: Thresholds | None = None,
    no_value: str | None = None,
    time_from: str | None = None,
    decimals: int | None = None,
) -> stat.Panel:
    """One number (the last value), coloured by ``thresholds``.

    ``no_value`` is what a count shows when nothing matches (e.g. "0" firing alerts), and
    ``time_from`` a relative range of its own, e.g. ``now/d`` for today so far.
    """
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .with_target(target)
        .unit(unit)
        .thresholds(thresholds or neutral())
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if no_value is not None:
        panel = panel.no_value(no_value)
    if time_from is not None:
        panel = panel.time_from(time_from)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def bar_gauge(
    title: str,
    description: str,
    target: InfluxQL,
    *,
    unit: str,
    thresholds: Thresholds,
    minimum: float | None = None,
    maximum: float | None = None,
) -> bargauge.Panel:
    """One bar per series (device or park), coloured by ``thresholds``."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .with_target(target)
        .unit(unit)
        .thresholds(thresholds)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    return panel


def text_states(states: Mapping[str, str]) -> list[model.ValueMapping]:
    """Value mappings colouring text values (``{"Faulted": "red", ...}``)."""
    return [
        model.ValueMap(
            options={
                value: model.ValueMappingResult(color=color, index=index)
                for index, (value, color) in enumerate(states.items())
            }
        )
    ]


def boolean_states(*, true: tuple[str, str], false: tuple[str, str]) -> list[model.ValueMapping]:
    """Value mappings for a boolean field: ``(text, colour)`` for true and for false."""
    return [
        model.SpecialValueMap(
            options=model.DashboardSpecialValueMapOptions(
                match=match, result=model.ValueMappingResult(text=text, color=color, index=index)
            )
        )
        for index, (match, (text, color)) in enumerate(
            ((model.SpecialValueMatch.TRUE, true), (model.SpecialValueMatch.FALSE, false))
        )
    ]


def state_timeline(
    title: str,
    description: str,
    target: InfluxQL,
    *,
    mappings: list[model.ValueMapping],
) -> statetimeline.Panel:
    """A state per series over time, coloured by value mappings."""
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .with_target(target)
        .mappings(mappings)
        .thresholds(neutral())
        .color_scheme(builders.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
    )


def table_panel(
    title: str,
    description: str,
    *targets: InfluxQL,
    units: Mapping[str, str] | None = None,
    thresholds: Mapping[str, Thresholds] | None = None,
    sort_by: str | None = None,
    time_from: str | None = None,
    link_parks: bool = False,
    hide: Sequence[str] = ("Time",),
) -> table.Panel:
    """Rows merged from every target on their shared tag columns (e.g. ``park``).

    ``units`` and ``thresholds`` are per column; ``sort_by`` sorts descending by a column;
    ``link_parks`` makes the ``park`` column open the Park dashboard for that park.
    """
    panel = table.Panel().title(title).description(description)
    for target in targets:
        panel = panel.with_target(target)
    # Drop the time column first: each query's rows carry their own time (the range start, or
    # 0 for a subquery), which would keep "merge" from joining them on the tag columns.
    if hide:
        panel = panel.with_transformation(
            model.DataTransformerConfig(
                id_val="organize", options={"excludeByName": dict.fromkeys(hide, True)}
            )
        )
    if len(targets) > 1:
        panel = panel.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    for column, unit in (units or {}).items():
        panel = panel.override_by_name(
            column, [model.DynamicConfigValue(id_val="unit", value=unit)]
        )
    for column, steps in (thresholds or {}).items():
        panel = panel.override_by_name(
            column,
            [
                model.DynamicConfigValue(id_val="thresholds", value=steps.build()),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
    if link_parks:
        panel = panel.override_by_name("park", [link_to_park()])
    if sort_by is not None:
        panel = panel.sort_by(
            [common_builders.TableSortByFieldState().display_name(sort_by).desc(True)]
        )
    if time_from is not None:
        panel = panel.time_from(time_from)
    return panel


def link_to_park() -> model.DynamicConfigValue:
    """A field property: clicking a park id opens the Park dashboard for it."""
    return model.DynamicConfigValue(
        id_val="links", value=[{"title": "Open the park", "url": PARK_DASHBOARD_LINK}]
    )
