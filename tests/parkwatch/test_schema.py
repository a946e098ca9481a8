"""The device contract: models, topic parsing and the committed JSON Schema files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from parkwatch.cli import main
from parkwatch.schema import (
    KIND_MODELS,
    ChargerTelemetry,
    Kind,
    TopicParts,
    json_schemas,
    parse_topic,
    status_topic,
    telemetry_topic,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_json_schemas_match_the_models() -> None:
    for kind, document in json_schemas().items():
        committed = orjson.loads((SCHEMAS / f"{kind}.schema.json").read_bytes())
        assert committed == document, f"regenerate with: parkwatch schema --out schemas ({kind})"
    assert {path.name for path in SCHEMAS.glob("*.schema.json")} == {
        f"{kind.value}.schema.json" for kind in Kind
    }


def test_schema_command_prints_every_kind() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    assert set(orjson.loads(result.output)) == {kind.value for kind in Kind}


def test_every_kind_has_a_model_whose_kind_matches() -> None:
    assert set(KIND_MODELS) == set(Kind)
    for kind, model in KIND_MODELS.items():
        assert model.kind is kind
        assert "ts" in model.model_json_schema()["required"]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1_700_000_000_000, 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-15T06:13:20.250+08:00", 1_700_000_000_250),
    ],
)
def test_ts_accepts_epoch_ms_and_rfc3339(ts: object, expected: int) -> None:
    assert ChargerTelemetry.model_validate({"ts": ts}).ts == expected


def test_topics_round_trip() -> None:
    topic = telemetry_topic("lingang", Kind.STORAGE, "bess 1")
    parts = parse_topic(topic)
    assert isinstance(parts, TopicParts)
    assert (parts.park, parts.kind, parts.device, parts.channel) == (
        "lingang",
        "storage",
        "bess 1",
        "telemetry",
    )
    status = parse_topic(status_topic("lingang", "storage", "b", prefix="x"), prefix="x")
    assert isinstance(status, TopicParts)
    assert status.channel == "status"
    assert isinstance(parse_topic("parks/a/b/c/d/telemetry"), str)
