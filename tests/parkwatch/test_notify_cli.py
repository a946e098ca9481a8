"""``parkwatch notify test RECEIVER`` against a real Alertmanager, and its failures."""

from __future__ import annotations

import os

import orjson
import pytest
from click.testing import CliRunner

from parkwatch.cli import main
from parkwatch.localservers import Alertmanager, free_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start without any PARKWATCH_ variable the runner's environment may hold."""
    for name in list(os.environ):
        if name.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(name)


def notify_env(receivers: dict[str, object]) -> dict[str, str]:
    """The notify section as one environment variable, as a user could set it."""
    return {"PARKWATCH_NOTIFY": orjson.dumps({"receivers": receivers}).decode()}


@pytest.mark.servers
def test_a_test_notification_reaches_alertmanager(
    alertmanager: Alertmanager, topic_prefix: str
) -> None:
    name = f"am-{topic_prefix}"[:64]
    env = notify_env({name: {"type": "alertmanager", "url": alertmanager.url}})
    result = CliRunner().invoke(main, ["notify", "test", name], env=env)
    assert result.exit_code == 0, result.output
    assert f"test notification delivered to {name} in " in result.output
    (shown,) = alertmanager.alerts(receiver=name)
    assert shown["labels"]["alertname"] == "ParkwatchTest"
    assert shown["annotations"]["summary"] == f"parkwatch test notification for receiver {name}"


def test_an_unknown_receiver_is_named() -> None:
    env = notify_env({"ops": {"type": "webhook", "url": "http://127.0.0.1:9/x"}})
    result = CliRunner().invoke(main, ["notify", "test", "nope"], env=env)
    assert result.exit_code == 1
    assert "no notify receiver named 'nope' (receivers: ops)" in result.output


def test_an_unreachable_receiver_is_reported() -> None:
    env = notify_env({"ops": {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/x"}})
    result = CliRunner().invoke(main, ["notify", "test", "ops"], env=env)
    assert result.exit_code == 1
    assert "not delivered: ops: " in result.output


def test_an_apprise_url_apprise_does_not_know_stops_with_a_clear_message() -> None:
    env = notify_env({"chat": {"type": "apprise", "url": "nosuchservice://token"}})
    result = CliRunner().invoke(main, ["notify", "test", "chat"], env=env)
    assert result.exit_code == 1
    assert "notify.receivers.chat.url: not an Apprise URL" in result.output
    assert "nosuchservice://token" not in result.output  # the URL may hold a token
