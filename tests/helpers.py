"""Test helpers: a synchronous QoS 1 publisher, a running collector, and awaiting a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector.metrics import Metrics
from parkwatch.localservers import Alertmanager, InfluxDB1, Mosquitto
from parkwatch.service import Collector
from parkwatch.settings import Settings, load_settings


@asynccontextmanager
async def running_collector(
    settings: Settings,
) -> AsyncIterator[tuple[Collector, asyncio.Task[None]]]:
    """Run a collector until the block ends (then drain it); enter once it is subscribed."""
    collector = Collector(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        await until(collector.connected.is_set, what="collector subscribed", alive=task)
        yield collector, task
    finally:
        stop.set()
        await task


def metric_value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample as ``/metrics`` would show it (counters by their ``_total`` name); 0 if absent."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - the failure names the awaited condition
    what: str = "",
    alive: asyncio.Task[Any] | None = None,
) -> None:
    """Await ``condition`` becoming true (re-checked every 20 ms); fail after ``timeout``, or at
    once if the ``alive`` task (the collector under test) has ended.

    The asynchronous twin of `parkwatch.localservers.wait_for`, kept because that one cannot
    serve here: it sleeps the thread, which would freeze the event loop and with it the
    collector under test; this one awaits between probes, accepts awaitable conditions and
    watches the collector's task."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and alive.done():
            alive.result()  # raises what killed it
            raise AssertionError(f"task ended while waiting for {what or condition}")
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.02)


async def broker_saw_disconnects(broker: Mosquitto, client_id: str, count: int) -> None:
    """Await the broker logging ``count`` clean disconnects of ``client_id`` in all.

    Until the broker has read a client's DISCONNECT, acks that client sent just before may still
    sit unread in its socket; a new connection with the same client id takes the session over
    and those acks are lost, so the broker redelivers the messages. Awaiting this makes the next
    connection see exactly what was not acked.
    """
    line = f"Client {client_id} disconnected."

    def seen() -> bool:
        return broker.log_path.read_text(errors="replace").count(line) >= count

    await until(seen, what=f"the broker to see {client_id} disconnect {count} times")


def publish_all(
    broker: Mosquitto,
    messages: Iterable[tuple[str, bytes]],
    *,
    qos: int = 1,
    retain: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> int:
    """Publish from a separate client and wait for every PUBACK; return the count."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    if username:
        client.username_pw_set(username, password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages
        ]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published(), "broker did not acknowledge a publish"
    finally:
        client.disconnect()
        client.loop_stop()
    return len(infos)


def collector_settings(
    tmp_path: Path,
    broker: Mosquitto,
    influx_server: InfluxDB1,
    database: str,
    topic_prefix: str,
    **overrides: Any,
) -> Settings:
    """Settings pointing a collector at the test servers, with short timings."""
    values: dict[str, Any] = {
        "mqtt": {
            "url": broker.url,
            "topic_prefix": topic_prefix,
            "client_id": f"collector-{topic_prefix}"[:64],
            "reconnect_max_s": 0.5,
            "retained_state_file": tmp_path / "retained-seen.bin",
        },
        "influx": {"url": influx_server.url, "database": database},
        "writer": {"flush_interval_s": 0.2, "retry_initial_s": 0.05, "retry_max_s": 0.2},
        "spool": {"directory": tmp_path / "spool"},
        "deadletter": {"path": tmp_path / "deadletter.jsonl"},
        "state": {"directory": tmp_path / "state"},
        "http": {"port": 0},
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value}
    return load_settings(None, **values)


async def alertmanager_alerts(server: Alertmanager, **labels: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds as active (endsAt still ahead) with these label values."""
    return await asyncio.to_thread(server.alerts, **labels)


async def until_alertmanager_shows(
    server: Alertmanager,
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - passed on to until()
    **labels: str,
) -> dict[str, Any]:
    """Await exactly one active alert with these labels in Alertmanager, and return it."""
    found: list[dict[str, Any]] = []

    async def shown() -> bool:
        found[:] = await alertmanager_alerts(server, **labels)
        return len(found) == 1

    await until(shown, timeout=timeout, what=f"Alertmanager to show an alert {labels}")
    return found[0]


async def until_alertmanager_resolved(
    server: Alertmanager,
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - passed on to until()
    **labels: str,
) -> None:
    """Await no active alert with these labels in Alertmanager (resolved, or never there)."""

    async def gone() -> bool:
        return not await alertmanager_alerts(server, **labels)

    await until(gone, timeout=timeout, what=f"Alertmanager to resolve {labels}")


FIXED_NOW: Final = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
"""A frozen "now" for tests of HTTP dates (``Retry-After``)."""


def http_date(seconds_from_now: float) -> str:
    """An IMF-fixdate ``seconds_from_now`` after FIXED_NOW."""
    return format_datetime(
        datetime.fromtimestamp(FIXED_NOW.timestamp() + seconds_from_now, UTC), usegmt=True
    )
