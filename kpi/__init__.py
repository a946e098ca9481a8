"""Park green KPIs: streaming, from counters, in event time (issue 7).

* :mod:`kpi.engine`   :class:`KpiEngine`, the ``parkwatch.events.Engine`` the analytics stage runs
* :mod:`kpi.park`     one park's state: device counters, connectors, window series, closing
* :mod:`kpi.series`   one window kind's open windows, and spreading readings over them
* :mod:`kpi.counters` counter increases (resets), per-device tracks, connector statuses
* :mod:`kpi.windows`  ``1m``/``15m``/``1h`` on the clock, ``1d`` at the park's local midnight
* :mod:`kpi.formulas` the KPI fields of one window from its totals (pure)

Stands on the shared contract only (``parkwatch.events``, ``points``, ``settings``, ``clock``).
"""

from kpi.engine import KpiEngine
from kpi.formulas import KPI_FIELDS

__all__ = ["KPI_FIELDS", "KpiEngine"]
