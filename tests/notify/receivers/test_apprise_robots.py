"""Chat robots through Apprise: the exact requests WeCom, DingTalk, Feishu and Lark get.

These services live on fixed public hosts, so their HTTP calls are intercepted at requests'
transport (the ``responses`` library) and checked against each robot's public documentation:

* WeCom group robot (developer.work.weixin.qq.com/document/path/91770): POST JSON to
  ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY``; Apprise sends ``msgtype text``
  (``{"msgtype": "text", "text": {"content": ...}}``), at most 2048 bytes.
* DingTalk custom robot (open.dingtalk.com, custom-robot-access and signing): POST JSON to
  ``https://oapi.dingtalk.com/robot/send?access_token=T&timestamp=MS&sign=S`` where S is
  base64(HMAC-SHA256(key=secret, msg="timestamp\\nsecret")), URL-encoded once;
  ``{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}``.
* Feishu / Lark custom bot (open.feishu.cn / open.larksuite.com, bot/v2/hook/TOKEN): an
  interactive card, ``{"msg_type": "interactive", "card": {"header": {"title": {"tag":
  "plain_text", ...}, "template": COLOUR}, "elements": [{"tag": "div", "text": {"tag":
  "lark_md", ...}}]}}``.

A real HTTP round trip through Apprise (its ``json://`` service to a local server, with a 500
retried) runs without interception at the end.
"""

# Chinese text uses full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import responses
from prometheus_client import CollectorRegistry

from notify.dispatcher import Dispatcher
from notify.links import DashboardLinks
from notify.model import Notification
from notify.receivers.apprise_urls import AppriseNotifier
from notify.render import Renderer
from parkwatch.settings import AppriseReceiverSettings, ParksSettings
from tests.helpers import until
from tests.notify.helpers import (
    RecordingServer,
    alert,
    mean_latency_ms,
    resolved,
    running,
    settings,
    transition,
)

RENDERER = Renderer(
    DashboardLinks("http://grafana.park:3000", "parkwatch-park"),
    ParksSettings.model_validate({"overrides": {"caohejing": {"name": "漕河泾"}}}),
)
GROUP = (alert(device="bess-1"), alert(device="bess-2"))
OK = {"errcode": 0, "errmsg": "ok"}


@pytest.fixture
def robots() -> Iterator[responses.RequestsMock]:
    """requests' transport intercepted: every robot host answers like the real one on success."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post("https://qyapi.weixin.qq.com/cgi-bin/webhook/send", json=OK)
        mock.post("https://oapi.dingtalk.com/robot/send", json=OK)
        success = {"code": 0, "msg": "success", "data": {}}
        mock.post("https://open.feishu.cn/open-apis/bot/v2/hook/feishutoken/", json=success)
        mock.post("https://open.larksuite.com/open-apis/bot/v2/hook/larktoken", json=success)
        yield mock


async def send(url: str, notification: Notification, language: str = "zh") -> None:
    """Send one notification through an Apprise receiver built from ``url``."""
    receiver = AppriseReceiverSettings.model_validate(
        {"type": "apprise", "url": url, "language": language}
    )
    notifier = AppriseNotifier("robot", receiver, RENDERER)
    try:
        await notifier.send(notification)
    finally:
        await notifier.close()


def only_call(mock: responses.RequestsMock) -> tuple[str, dict[str, list[str]], Any]:
    """The one intercepted request: path URL, decoded query, JSON body."""
    assert len(mock.calls) == 1
    request = mock.calls[0].request
    assert request.url is not None
    assert request.method == "POST"
    parts = urlsplit(request.url)
    body = request.body
    assert isinstance(body, str | bytes)
    raw = body.encode() if isinstance(body, str) else body
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qs(parts.query), orjson.loads(raw)


async def test_wecom_gets_a_text_message_within_its_limit(robots: responses.RequestsMock) -> None:
    await send("wecombot://wecomKEY-123", Notification("robot", GROUP))
    url, query, body = only_call(robots)
    assert url == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    assert query == {"key": ["wecomKEY-123"]}
    message = RENDERER.render(Notification("robot", GROUP), "zh", markdown=False)
    assert body == {"msgtype": "text", "text": {"content": f"{message.title}\r\n{message.body}"}}
    assert body["text"]["content"].startswith("【告警 2】StorageCellHot · 漕河泾\r\n告警中（2 条）")
    assert len(body["text"]["content"].encode()) <= 2048


async def test_dingtalk_gets_markdown_signed_as_its_docs_say(
    robots: responses.RequestsMock,
) -> None:
    secret = "SEC0123456789abcdef"
    before_ms = int(time.time() * 1000)
    await send(f"dingtalk://{secret}@dingtoken/", Notification("robot", GROUP))
    url, query, body = only_call(robots)
    assert url == "https://oapi.dingtalk.com/robot/send"
    assert query["access_token"] == ["dingtoken"]
    (timestamp,) = query["timestamp"]
    assert before_ms <= int(timestamp) <= int(time.time() * 1000)  # docs: within an hour of now
    # The server decodes the query once (parse_qs does the same) and must find base64 itself.
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(digest).decode()]
    message = RENDERER.render(Notification("robot", GROUP), "zh", markdown=True)
    assert body["msgtype"] == "markdown"
    assert body["markdown"] == {
        "title": message.title,
        "text": f"# {message.title}\n{message.body}",
    }
    assert "**告警中（2 条）**" in body["markdown"]["text"]
    assert (
        "[查看看板](http://grafana.park:3000/d/parkwatch-park?var-park=caohejing"
        in (body["markdown"]["text"])
    )


async def test_dingtalk_without_a_secret_is_unsigned(robots: responses.RequestsMock) -> None:
    await send("dingtalk://dingtoken/", Notification("robot", GROUP), language="en")
    _, query, body = only_call(robots)
    assert set(query) == {"access_token"}
    assert body["markdown"]["title"] == "[FIRING:2] StorageCellHot · 漕河泾"


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("feishu://feishutoken", "https://open.feishu.cn/open-apis/bot/v2/hook/feishutoken/"),
        ("lark://larktoken", "https://open.larksuite.com/open-apis/bot/v2/hook/larktoken"),
    ],
)
async def test_feishu_and_lark_get_a_markdown_card_coloured_by_state(
    robots: responses.RequestsMock, url: str, endpoint: str
) -> None:
    ended = (resolved(GROUP[0]),)
    await send(url, Notification("robot", ended))
    called, query, body = only_call(robots)
    assert (called, query) == (endpoint, {})
    message = RENDERER.render(Notification("robot", ended), "zh", markdown=True)
    assert body == {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {
                "title": {"tag": "plain_text", "content": "【已恢复】StorageCellHot · 漕河泾"},
                "template": "green",
            },
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": message.body}}],
        },
    }


async def test_a_critical_firing_card_is_red(robots: responses.RequestsMock) -> None:
    await send("feishu://feishutoken", Notification("robot", GROUP))
    _, _, body = only_call(robots)
    assert body["card"]["header"]["template"] == "red"


async def test_a_real_http_round_trip_through_apprise_retries_a_500(
    http_receiver: RecordingServer, registry: CollectorRegistry
) -> None:
    http_receiver.status = 500
    receivers = {"json": {"type": "apprise", "url": f"json://127.0.0.1:{http_receiver.port}/in"}}
    async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
        dispatcher.submit(transition(alert()))
        await until(lambda: len(http_receiver.requests) >= 2, what="a retry")
        http_receiver.status = 200
        sent = ("parkwatch_notifications_total", {"receiver": "json", "outcome": "sent"})
        await until(lambda: registry.get_sample_value(*sent) == 1, what="delivery")
    body = orjson.loads(http_receiver.requests[-1].body)
    assert body["title"] == "【告警 1】StorageCellHot · caohejing"
    assert body["message"].startswith("**告警中（1 条）**")
    assert body["type"] == "failure"


async def test_every_robot_gets_one_message_through_the_dispatcher(
    robots: responses.RequestsMock,
    registry: CollectorRegistry,
    record_property: Callable[[str, object], None],
) -> None:
    receivers = {
        "wecom": {"type": "apprise", "url": "wecombot://wecomKEY"},
        "dingtalk": {"type": "apprise", "url": "dingtalk://SECabc123@dingtoken/"},
        "feishu": {"type": "apprise", "url": "feishu://feishutoken"},
    }
    async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
        dispatcher.submit(transition(alert()))
        await until(lambda: len(robots.calls) == 3, what="one request per robot")
        await dispatcher.drain(5)
    hosts = sorted(urlsplit(call.request.url or "").hostname or "" for call in robots.calls)
    assert hosts == ["oapi.dingtalk.com", "open.feishu.cn", "qyapi.weixin.qq.com"]
    for name in receivers:
        record_property(f"{name}_latency_firing_to_delivered_ms", mean_latency_ms(registry, name))


async def test_a_late_success_of_a_timed_out_attempt_is_not_sent_again(
    http_receiver: RecordingServer, registry: CollectorRegistry
) -> None:
    http_receiver.hang = True
    url = f"json://127.0.0.1:{http_receiver.port}/in?rto=30"  # Apprise itself waits long
    receivers = {"json": {"type": "apprise", "url": url, "attempt_timeout_s": 0.2}}
    async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
        dispatcher.submit(transition(alert()))
        retries = ("parkwatch_notification_retries_total", {"receiver": "json"})
        await until(lambda: (registry.get_sample_value(*retries) or 0) >= 2, what="timeouts")
        http_receiver.release()  # the first attempt's request now succeeds, late
        sent = ("parkwatch_notifications_total", {"receiver": "json", "outcome": "sent"})
        await until(lambda: registry.get_sample_value(*sent) == 1, what="delivery")
    assert len(http_receiver.requests) == 1, "the late success counts; nothing is sent twice"
