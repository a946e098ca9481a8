"""Rate mode against a real Mosquitto: everything sent is acknowledged and delivered."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import datetime

import pytest

from parkwatch.errors import SourceError
from parkwatch.localservers import Mosquitto
from simulators.fleet import default_fleet
from simulators.generate import iter_messages
from simulators.rate import RateReport, publish_at_rate
from tests.simulators.subscriber import MqttSubscriber


def _pool(prefix: str, start: datetime) -> list[tuple[str, bytes]]:
    return list(iter_messages(default_fleet(["hongqiao"]), 0, start, 300, prefix=prefix))


@pytest.mark.servers
async def test_flat_out_publishes_count_messages_all_acknowledged(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    pool = _pool(subscriber.prefix, start)
    count = 3 * len(pool) + 7  # cycles through the pool
    report = await publish_at_rate(
        pool,
        host=mosquitto.host,
        port=mosquitto.port,
        rate=0,
        count=count,
        connections=3,
        window=50,
    )
    assert report.sent == report.acked == count
    assert report.rate > 0
    await subscriber.flush()
    # Several connections interleave, so compare as multisets.
    expected = Counter(pool[i % len(pool)] for i in range(count))
    assert Counter((t, p) for t, p, _ in subscriber.telemetry()) == expected


@pytest.mark.servers
async def test_paced_run_sends_the_requested_count(
    mosquitto: Mosquitto, subscriber: MqttSubscriber, start: datetime
) -> None:
    pool = _pool(subscriber.prefix, start)
    report = await publish_at_rate(
        pool,
        host=mosquitto.host,
        port=mosquitto.port,
        rate=5000,
        count=300,
        client_id=subscriber.prefix,
    )
    assert (report.sent, report.acked) == (300, 300)
    assert "acknowledged 300" in str(report)


async def test_unreachable_broker_is_a_source_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError, match="cannot connect"):
        await publish_at_rate([("t", b"{}")], host="127.0.0.1", port=port, rate=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": -1.0}, {"rate": 0.0, "connections": 0}, {"rate": 0.0, "window": 0}],
)
async def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad rate mode settings"):
        await publish_at_rate([("t", b"{}")], host="127.0.0.1", port=1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one message"):
        await publish_at_rate([], host="127.0.0.1", port=1, rate=0)


def test_report_rate_of_an_instant_run_is_zero() -> None:
    assert RateReport(sent=0, acked=0, elapsed_s=0.0).rate == 0.0


@pytest.mark.servers
async def test_rate_mode_with_credentials(mosquitto_auth: Mosquitto, start: datetime) -> None:
    pool = _pool("auth-rate", start)
    report = await publish_at_rate(
        pool,
        host=mosquitto_auth.host,
        port=mosquitto_auth.port,
        rate=0,
        username=mosquitto_auth.username,
        password=mosquitto_auth.password,
    )
    assert report.acked == len(pool)
    with pytest.raises(SourceError, match="cannot connect"):
        await publish_at_rate(
            pool,
            host=mosquitto_auth.host,
            port=mosquitto_auth.port,
            rate=0,
            username=mosquitto_auth.username,
            password="wrong",
        )
