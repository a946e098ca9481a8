"""The README's "secrets never logged", checked where it matters: a real collector process with
every secret set, at DEBUG, driven through connect, writes, a failing write, a database restart
and shutdown; then its whole log, every ``/healthz`` and every ``/metrics`` it served are searched
for each secret, raw, percent-encoded, and as the HTTP Basic credentials it sends.

Two runs, because InfluxDB accepts one way to authenticate at a time:

* ``v1``: the MQTT password in the URL *and* (a different, winning one) in ``mqtt.password``; the
  InfluxDB password in the URL *and* (the winning one) in ``influx.password``, against an
  InfluxDB 1.6 with authentication on (so the winning ones are really used).
* ``v2``: the MQTT password in the URL only; the InfluxDB token, against VictoriaMetrics' v2 API.

Each secret holds characters a URL must percent-encode (``/ # ? @ %``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import orjson
import pytest

from parkwatch.localservers import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.faults import (
    MEASUREMENT,
    CollectorProcess,
    Publisher,
    influx_count,
    numbered_stream,
    numbered_topic,
    wait_until,
)

pytestmark = pytest.mark.servers

MQTT_USER = "collector"
MQTT_SECRET = "Mq/se#cr?et@1%20"
MQTT_URL_SECRET = "Mu/stale#url?pass@2"
INFLUX_USER = "admin"
INFLUX_SECRET = "In/se#cr?et@3%41"
INFLUX_URL_SECRET = "Iu/stale#url?pass@4"
TOKEN = "Tk/to#ken?value@5"
WAIT_S = 60.0
BATCH = 60  # messages per phase


def shown_forms(secret: str) -> set[str]:
    """Every way a secret could appear in text: raw and percent-encoded."""
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def basic_credentials(user: str, secret: str) -> str:
    """The HTTP Basic ``Authorization`` value for ``user`` and ``secret``."""
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


@dataclass
class Observed:
    """Everything the collector showed: its log (read at the end), /healthz and /metrics."""

    pages: list[str] = field(default_factory=list)

    def look(self, collector: CollectorProcess) -> None:
        """Fetch /healthz and /metrics now and keep them."""
        status, health = collector.health()
        self.pages.append(f"/healthz {status}: {orjson.dumps(health).decode()}")
        self.pages.append("/metrics: " + repr(collector.metrics()))


@pytest.fixture
def secret_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto that accepts only MQTT_USER with MQTT_SECRET."""
    with Mosquitto(tmp_path / "mosquitto", users={MQTT_USER: MQTT_SECRET}) as broker:
        yield broker


def scan(text: str, secrets: dict[str, str]) -> list[str]:
    """The names of the secrets whose any form appears in ``text``."""
    found = []
    for name, secret in secrets.items():
        forms = shown_forms(secret) | {
            basic_credentials(INFLUX_USER, secret),
            basic_credentials(MQTT_USER, secret),
        }
        found += [f"{name} as {form!r}" for form in forms if form in text]
    return found


def run_v1(
    tmp_path: Path, stack: ExitStack, broker: Mosquitto, topic_prefix: str
) -> tuple[CollectorProcess, Callable[[], int], Callable[[], None], Callable[[], None]]:
    """A collector against its own InfluxDB with authentication on, every v1 secret set."""
    influx = stack.enter_context(
        InfluxDB1(tmp_path / "influxdb", admin=(INFLUX_USER, INFLUX_SECRET))
    )
    influx.create_database("secrets")
    url = f"http://{INFLUX_USER}:{quote(INFLUX_URL_SECRET, safe='')}@{influx.host}:{influx.port}"
    collector = CollectorProcess(
        tmp_path / "collector",
        broker=broker,
        influx=influx,
        database="secrets",
        topic_prefix=topic_prefix,
        env={
            "PARKWATCH_MQTT__URL": f"mqtt://{MQTT_USER}:{quote(MQTT_URL_SECRET, safe='')}"
            f"@{broker.host}:{broker.port}",
            "PARKWATCH_MQTT__PASSWORD": MQTT_SECRET,
            "PARKWATCH_INFLUX__URL": url,
            "PARKWATCH_INFLUX__PASSWORD": INFLUX_SECRET,
        },
    )
    return collector, lambda: influx_count(influx, "secrets"), influx.stop, influx.start


def run_v2(
    tmp_path: Path, stack: ExitStack, broker: Mosquitto, topic_prefix: str, unused: InfluxDB1
) -> tuple[CollectorProcess, Callable[[], int], Callable[[], None], Callable[[], None]]:
    """A collector writing through the v2 API to its own VictoriaMetrics, with a token."""
    victoria = stack.enter_context(VictoriaMetrics(tmp_path / "victoria"))
    collector = CollectorProcess(
        tmp_path / "collector",
        broker=broker,
        influx=unused,
        database="secrets",
        topic_prefix=topic_prefix,
        env={
            "PARKWATCH_MQTT__URL": f"mqtt://{MQTT_USER}:{quote(MQTT_SECRET, safe='')}"
            f"@{broker.host}:{broker.port}",
            "PARKWATCH_INFLUX__URL": victoria.url,
            "PARKWATCH_INFLUX__API": "v2",
            "PARKWATCH_INFLUX__TOKEN": TOKEN,
        },
    )

    def count() -> int:
        series = victoria.export(f'{{__name__="{MEASUREMENT}_seq"}}')
        return sum(len(s["values"]) for s in series)

    return collector, count, victoria.stop, victoria.start


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_no_secret_appears_in_logs_health_or_metrics_of_a_real_run(
    tmp_path: Path,
    secret_broker: Mosquitto,
    influxdb: InfluxDB1,
    topic_prefix: str,
    api: str,
) -> None:
    secrets = {"mqtt.password": MQTT_SECRET, "mqtt.url password": MQTT_URL_SECRET}
    if api == "v1":
        secrets |= {"influx.password": INFLUX_SECRET, "influx.url password": INFLUX_URL_SECRET}
    else:
        secrets |= {"influx.token": TOKEN}
    observed = Observed()
    with ExitStack() as stack:
        if api == "v1":
            collector, count, stop_db, start_db = run_v1(
                tmp_path, stack, secret_broker, topic_prefix
            )
        else:
            collector, count, stop_db, start_db = run_v2(
                tmp_path, stack, secret_broker, topic_prefix, influxdb
            )
        collector.env["PARKWATCH_LOG_LEVEL"] = "DEBUG"
        stack.callback(collector.close)
        collector.start()
        collector.wait_subscribed()  # connected with the winning password
        observed.look(collector)

        publisher = Publisher(secret_broker, client_id=f"pub-{topic_prefix}"[:64])
        publisher._client.username_pw_set(MQTT_USER, MQTT_SECRET)
        stack.callback(publisher.close)
        publisher.connect()
        base_ms = int(time.time() * 1000) - 600_000

        def written(n: int) -> None:
            wait_until(
                lambda: count() >= n, timeout=WAIT_S, what=f"{n} points", collector=collector
            )

        publisher.publish_many(numbered_stream(topic_prefix, range(BATCH), base_ms))
        written(BATCH)  # writes authenticated with the winning password or the token
        if api == "v1":  # a write InfluxDB refuses: a field type conflict, dead-lettered
            conflict = {"ts": base_ms + BATCH, "seq": True}  # seq is a float field
            publisher.publish(-1, numbered_topic(topic_prefix, BATCH), orjson.dumps(conflict))
            wait_until(
                lambda: collector.metrics().get('parkwatch_write_errors_total{kind="rejected"}'),
                timeout=WAIT_S,
                what="a refused write",
                collector=collector,
            )

        stop_db()  # writes fail, are retried, then spooled
        publisher.publish_many(numbered_stream(topic_prefix, range(BATCH + 1, 2 * BATCH), base_ms))
        wait_until(
            lambda: collector.metric("parkwatch_spooled_batches_total") >= 1,
            timeout=WAIT_S,
            what="a failed write spooled",
            collector=collector,
        )
        observed.look(collector)
        start_db()
        written(2 * BATCH - 1)  # replayed
        observed.look(collector)
        assert collector.terminate() == 0

    log = collector.log_text()
    assert "DEBUG" in log  # the scan covers the most talkative level
    assert "spooling" in log  # and the write-failure path
    leaks = scan(log, secrets) + scan("\n".join(observed.pages), secrets)
    assert leaks == [], f"secrets shown: {leaks}\n{collector.log_tail()}"
