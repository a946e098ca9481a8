"""Counter increases, resets included (Prometheus ``increase()`` semantics)."""

from __future__ import annotations

import pytest

from kpi.counters import COUNTER_SOURCES, increase
from parkwatch.schema import KIND_MODELS


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (10.0, 12.5, 2.5),  # a rise
        (10.0, 10.0, 0.0),  # no change
        (1000.0, 3.0, 3.0),  # a reset: the new value is what was counted since
        (1000.0, 0.0, 0.0),  # reset to zero
        (5.0, -1.0, 0.0),  # a nonsense negative reading adds nothing
    ],
)
def test_increase(previous: float, current: float, expected: float) -> None:
    assert increase(previous, current) == expected


def test_every_counter_source_is_a_field_of_its_kinds_payload() -> None:
    models = {kind.value: model for kind, model in KIND_MODELS.items()}
    for kind, sources in COUNTER_SOURCES.items():
        for field, _ in sources:
            assert field in models[kind].model_fields, (kind, field)
