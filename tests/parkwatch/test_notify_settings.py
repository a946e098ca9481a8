"""The notify settings: the shipped example loads, receivers come from the environment as
JSON, secrets never show, and mistakes stop the start with the setting named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from notify import Dispatcher
from notify.routing import Router
from parkwatch.errors import ConfigError
from parkwatch.settings import AppriseReceiverSettings, WebhookReceiverSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "notify.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start without any PARKWATCH_ variable the runner's environment may hold."""
    for name in list(os.environ):
        if name.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(name)


async def test_the_example_file_loads_and_every_receiver_can_be_built() -> None:
    settings = load_settings(EXAMPLE)
    dispatcher = Dispatcher(settings.notify, CollectorRegistry())
    try:
        assert sorted(dispatcher.receivers) == [
            "alertmanager",
            "ops-email",
            "ops-feishu",
            "ops-wecom",
            "storage-dingtalk",
            "ticketing",
        ]
    finally:
        await dispatcher.close()
    router = Router(settings.notify.route)
    labels = {"alertname": "StorageCellHot", "severity": "critical", "kind": "storage"}
    chosen = [
        r for route in router.routes_for({**labels, "park": "lingang"}) for r in route.receivers
    ]
    assert chosen == ["alertmanager", "ops-wecom", "ops-email", "storage-dingtalk"]


def test_receivers_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PARKWATCH_NOTIFY__RECEIVERS",
        '{"ops": {"type": "apprise", "url": "wecombot://KEY"}}',
    )
    monkeypatch.setenv("PARKWATCH_NOTIFY__ROUTE", '{"receivers": ["ops"]}')
    settings = load_settings()
    ops = settings.notify.receivers["ops"]
    assert isinstance(ops, AppriseReceiverSettings)
    assert ops.url.get_secret_value() == "wecombot://KEY"


def test_secrets_never_show() -> None:
    settings = load_settings(EXAMPLE)
    shown = repr(settings) + settings.model_dump_json()
    for secret in ("693axxx6", "SEC0123456789abcdef", "app-password", "change-me"):
        assert secret not in shown
    hook = settings.notify.receivers["ticketing"]
    assert isinstance(hook, WebhookReceiverSettings)
    assert hook.secret is not None
    assert hook.secret.get_secret_value() == "change-me"


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ({"receivers": {"x": {"type": "sms"}}}, "notify.receivers.x"),
        ({"receivers": {"bad name": {"type": "webhook", "url": "http://h"}}}, "receiver name"),
        (
            {"receivers": {"x": {"type": "webhook", "url": "ftp://h"}}},
            "notify.receivers.x.webhook.url",
        ),
        ({"receivers": {"x": {"type": "webhook", "url": "http://h", "colour": 1}}}, "colour"),
        ({"route": {"receivers": ["ghost"]}}, "unknown receivers: ghost"),
        ({"route": {"group_wait_s": -1}}, "notify.route.group_wait_s"),
    ],
)
def test_mistakes_name_the_setting(notify: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(notify=notify)


def test_links_go_to_the_provisioned_grafana_unless_notify_names_another() -> None:
    provisioned = load_settings(None, grafana={"url": "http://admin:pw@grafana.internal:3000/"})
    assert provisioned.notify.grafana_url == "http://grafana.internal:3000"  # no credentials
    public = load_settings(
        None,
        grafana={"url": "http://grafana.internal:3000"},
        notify={"grafana_url": "https://grafana.park.example"},
    )
    assert public.notify.grafana_url == "https://grafana.park.example"
    assert load_settings(None).notify.grafana_url is None
