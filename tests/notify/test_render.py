"""Messages read well in Chinese and English, as markdown and as plain text."""

# Chinese text uses full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import pytest

from notify.links import DashboardLinks
from notify.model import Notification, make_test_alert
from notify.render import Renderer
from parkwatch.settings import ParksSettings
from tests.notify.helpers import T0_MS, alert, resolved

PARKS = ParksSettings.model_validate(
    {"overrides": {"caohejing": {"name": "漕河泾开发区"}, "lingang": {"timezone": "UTC"}}}
)
RENDERER = Renderer(DashboardLinks("http://grafana.park:3000/", "parkwatch-park"), PARKS)
LINK = "http://grafana.park:3000/d/parkwatch-park?var-park=caohejing&from="


def test_a_firing_group_in_chinese_markdown() -> None:
    alerts = (alert(device="bess-1"), alert(device="bess-2", value=46.0))
    message = RENDERER.render(Notification("wecom", alerts), "zh", markdown=True)
    assert message.title == "【告警 2】StorageCellHot · 漕河泾开发区"
    lines = message.body.splitlines()
    assert lines[0] == "**告警中（2 条）**"
    assert lines[2].startswith("- **严重** StorageCellHot · 漕河泾开发区 储能 bess-1：")
    assert "（数值 47.2，开始于 2026-07-15 14:02:05 CST）" in lines[2]
    assert f"[查看看板]({LINK}" in lines[2]
    assert lines[3].startswith("- **严重** StorageCellHot · 漕河泾开发区 储能 bess-2")


def test_a_mixed_group_in_english_plain_text() -> None:
    firing = alert(device="bess-1")
    ended = resolved(alert(device="bess-2"), after_ms=(3600 + 5 * 60) * 1000)
    message = RENDERER.render(Notification("mail", (firing, ended)), "en", markdown=False)
    assert message.title == "[FIRING:1 RESOLVED:1] StorageCellHot · 漕河泾开发区"
    assert "**" not in message.body
    assert "Firing (1)" in message.body
    assert "- Critical StorageCellHot · 漕河泾开发区 storage bess-1" in message.body
    assert "Resolved (1)" in message.body
    assert "(2026-07-15 14:02:05 CST to 15:07:05, lasted 1 h 5 min)" in message.body
    assert f"Dashboard: {LINK}" in message.body
    # Firing and resolved sections are separate paragraphs.
    assert "\n\nResolved (1)\n\n" in message.body


def test_times_are_in_the_parks_time_zone_and_kinds_are_localised() -> None:
    faulted = alert(
        "ChargerFaulted",
        park="lingang",
        kind="charger",
        device="cp-7",
        connector="2",
        severity="major",
        value=None,
        summary="GroundFailure",
    )
    zh = RENDERER.render(Notification("x", (faulted,)), "zh", markdown=True)
    assert "**重要** ChargerFaulted · lingang 充电桩 cp-7 2 号枪：GroundFailure" in zh.body
    assert "开始于 2026-07-15 06:02:05 UTC）" in zh.body  # no value: none shown
    en = RENDERER.render(Notification("x", (faulted,)), "en", markdown=True)
    assert "lingang charger cp-7 connector 2: GroundFailure (since 2026-07-15 06:02:05 UTC)" in (
        en.body
    )


def test_a_resolved_group_title() -> None:
    ended = resolved(alert())
    assert RENDERER.render(Notification("x", (ended,)), "zh", markdown=True).title == (
        "【已恢复】StorageCellHot · 漕河泾开发区"
    )
    assert RENDERER.render(Notification("x", (ended,)), "en", markdown=True).title == (
        "[RESOLVED] StorageCellHot · 漕河泾开发区"
    )


def test_alerts_of_several_parks_and_names_are_counted_in_the_title() -> None:
    alerts = (alert(), alert("GridFrequency", park="wusong", device=""))
    assert RENDERER.render(Notification("x", alerts), "en", markdown=False).title == (
        "[FIRING:2] 2 alerts"
    )
    assert RENDERER.render(Notification("x", alerts), "zh", markdown=False).title == (
        "【告警 2】2 条告警"
    )


@pytest.mark.parametrize("language", ["zh", "en"])
def test_a_test_message_says_so_and_has_no_dashboard_link(language: str) -> None:
    note = Notification("ops", (make_test_alert(T0_MS, "ops"),), kind="test")
    message = RENDERER.render(note, "zh" if language == "zh" else "en", markdown=True)
    assert message.title.startswith("【测试】" if language == "zh" else "[TEST]")
    assert "ops" in message.body
    assert "grafana" not in message.body


def test_no_links_without_a_grafana_url() -> None:
    plain = Renderer(DashboardLinks(None, "parkwatch-park"))
    message = plain.render(Notification("x", (alert(),)), "en", markdown=True)
    assert "Dashboard" not in message.body
    assert "caohejing storage bess-1" in message.body  # no display name configured: the id


def test_a_long_group_lists_ten_and_counts_the_rest() -> None:
    alerts = tuple(alert(device=f"bess-{n}") for n in range(12))
    en = RENDERER.render(Notification("x", alerts), "en", markdown=False)
    assert en.title == "[FIRING:12] StorageCellHot · 漕河泾开发区"
    lines = [line for line in en.body.splitlines() if line.startswith("- ")]
    assert len(lines) == 11
    assert lines[-1] == "- ... and 2 more"
    zh = RENDERER.render(Notification("x", alerts), "zh", markdown=True)
    assert zh.body.splitlines()[0] == "**告警中（12 条）**"
    assert zh.body.endswith("- …… 另有 2 条")
