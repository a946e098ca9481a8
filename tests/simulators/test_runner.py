"""Realistic mode against a real Mosquitto: one connection per device, last wills, shutdown."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import datetime
from urllib.parse import quote

import orjson
import pytest

from parkwatch.errors import ConfigError, SourceError
from parkwatch.localservers import Mosquitto
from parkwatch.schema import Kind
from simulators.faults import FaultKind, FaultSpec, Scenario
from simulators.fleet import FleetSpec
from simulators.runner import MqttTarget, parse_mqtt_url, run_fleet
from tests.simulators.subscriber import MqttSubscriber

SMALL = FleetSpec.model_validate(
    {
        "parks": [
            {
                "id": "caohejing",
                "storage": {"count": 1},
                "site5g": {"count": 1},
                "charger": {"count": 1},
            }
        ]
    }
)
DEVICES = ("microgrid/mg-01", "storage/bess-01", "site5g/gnb-01", "charger/cp-01")


def _kinds(sub: MqttSubscriber) -> Counter[Kind]:
    return Counter(Kind(topic.split("/")[2]) for topic, _, _ in sub.telemetry())


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("mqtt://broker", MqttTarget("broker", 1883)),
        ("mqtt://10.0.0.5:1884", MqttTarget("10.0.0.5", 1884)),
        ("mqtt://sim:s%40cret@localhost:1883", MqttTarget("localhost", 1883, "sim", "s@cret")),
    ],
)
def test_parse_mqtt_url(url: str, target: MqttTarget) -> None:
    assert parse_mqtt_url(url) == target


@pytest.mark.parametrize(
    "url", ["http://x", "tcp://x", "mqtt://", "mqtts://x:8883", "mqtt://x:99999"]
)
def test_parse_mqtt_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_mqtt_url(url)


@pytest.mark.servers
async def test_accelerated_run_publishes_every_message_per_kind(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    seen: list[str] = []
    stats = await run_fleet(
        SMALL,
        mqtt_url=mosquitto.url,
        prefix=subscriber.prefix,
        speed=6000,
        start=start,
        seed=1,
        duration_s=600,
        on_publish=lambda topic, _: seen.append(topic),
    )
    await subscriber.flush()
    # 60 ticks of 10 s: microgrid and storage every tick, site and charger (2 connectors) every 3.
    expected = {Kind.MICROGRID: 60, Kind.STORAGE: 60, Kind.SITE5G: 20, Kind.CHARGER: 40}
    assert _kinds(subscriber) == expected
    assert stats.ticks == 60
    assert stats.published == stats.acked == len(seen) == 180
    assert stats.dropped == 0
    for device in DEVICES:
        online, offline = (orjson.loads(p) for p in subscriber.statuses(f"caohejing/{device}"))
        assert online == {"online": True, "ts": round(start.timestamp() * 1000)}
        assert offline["online"] is False
        assert "ts" in offline  # said by the device itself, not its last will


@pytest.mark.servers
async def test_at_any_speed_no_device_gets_ahead_of_the_others_at_the_broker(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    # In real time a tick's messages reach the broker long before the next tick's. At speed each
    # device's connection queued on its own, so a device ran simulated minutes ahead of another
    # and consumers closing event-time windows (the KPI engine, 60 s lateness) found the others'
    # readings late: the dashboards' simulated day lost its green EV energy for every hour.
    stats = await run_fleet(
        SMALL,
        mqtt_url=mosquitto.url,
        prefix=subscriber.prefix,
        speed=1e6,  # never waits: every tick is due at once
        start=start,
        seed=1,
        duration_s=3600,
    )
    await subscriber.flush()
    stamps = [orjson.loads(payload)["ts"] for _, payload, _ in subscriber.telemetry()]
    assert len(stamps) == stats.acked == 360 + 360 + 120 + 240
    behind = [(earlier, later) for earlier, later in itertools.pairwise(stamps) if later < earlier]
    assert behind == []


@pytest.mark.servers
async def test_offline_fault_drops_the_connection_and_the_broker_sends_the_will(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    scenario = Scenario(
        faults=[
            FaultSpec(
                fault=FaultKind.OFFLINE, device="caohejing/charger/cp-01", at=60, duration=120
            )
        ]
    )
    stats = await run_fleet(
        SMALL,
        mqtt_url=mosquitto.url,
        prefix=subscriber.prefix,
        speed=6000,
        start=start,
        seed=1,
        duration_s=600,
        scenario=scenario,
    )
    await subscriber.flush()
    statuses = [orjson.loads(p) for p in subscriber.statuses("caohejing/charger/cp-01")]
    assert statuses[0]["online"] is True
    assert {"online": False} in statuses  # the last will: no timestamp
    back = statuses[statuses.index({"online": False}) + 1]
    assert back == {"online": True, "ts": round(start.timestamp() * 1000) + 180_000}
    # Reports at 60, 90, 120 and 150 s are missing: 4 ticks x 2 connectors.
    assert _kinds(subscriber)[Kind.CHARGER] == 40 - 8
    assert stats.published == 180 - 8


@pytest.mark.servers
async def test_stop_event_ends_the_run_cleanly(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    stop = asyncio.Event()
    published = 0

    def count(_topic: str, _payload: bytes) -> None:
        nonlocal published
        published += 1
        if published == 50:
            stop.set()

    async with asyncio.timeout(30):
        stats = await run_fleet(
            SMALL,
            mqtt_url=mosquitto.url,
            prefix=subscriber.prefix,
            speed=600,
            start=start,
            stop=stop,
            on_publish=count,
        )
    assert stats.published == stats.acked >= 50
    await subscriber.flush()
    for device in DEVICES:
        assert orjson.loads(subscriber.statuses(f"caohejing/{device}")[-1])["online"] is False


@pytest.mark.servers
async def test_cancellation_disconnects_every_device(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    some_published = asyncio.Event()
    task = asyncio.create_task(
        run_fleet(
            SMALL,
            mqtt_url=mosquitto.url,
            prefix=subscriber.prefix,
            speed=1.0,  # real time: the run would last forever
            start=start,
            on_publish=lambda *_: some_published.set(),
        )
    )
    async with asyncio.timeout(30):
        await some_published.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await subscriber.until(
        lambda got: sum(t.endswith("/status") for t, _, _ in got) == 2 * len(DEVICES)
    )
    for device in DEVICES:
        last = orjson.loads(subscriber.statuses(f"caohejing/{device}")[-1])
        assert last["online"] is False
        assert "ts" in last  # a goodbye, not a last will


async def test_unreachable_broker_is_a_source_error(start: datetime) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError, match="4 device"):
        await run_fleet(SMALL, mqtt_url=f"mqtt://127.0.0.1:{port}", start=start, duration_s=60)


@pytest.mark.servers
async def test_credentials_in_the_url_are_used(mosquitto_auth: Mosquitto, start: datetime) -> None:
    user, password = mosquitto_auth.username, mosquitto_auth.password
    assert user is not None
    assert password is not None
    url = f"mqtt://{quote(user)}:{quote(password)}@{mosquitto_auth.host}:{mosquitto_auth.port}"
    stats = await run_fleet(
        SMALL, mqtt_url=url, prefix="auth", speed=6000, start=start, duration_s=60
    )
    assert stats.published == stats.acked == 6 + 6 + 2 + 4

    bad = f"mqtt://{quote(user)}:wrong@{mosquitto_auth.host}:{mosquitto_auth.port}"
    with pytest.raises(SourceError, match="could not connect"):
        await run_fleet(SMALL, mqtt_url=bad, start=start, duration_s=60)
