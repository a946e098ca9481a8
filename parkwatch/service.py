"""The collector service: every stage wired together under one TaskGroup, top to bottom.

::

    MQTT (collector/adapters/mqtt.py: parkwatch's asyncio client or paho, manual acks)
      -> inbox    [raw messages; full: the MQTT reader pauses, the broker holds QoS 1 messages]
      -> collector/decode.py   where a message becomes a point
           -- bad input --> dead [full: decoder blocks] -> collector/deadletter.py -> ack
                            (file unwritable: retried with backoff, not acked, health 503)
      -> points   [validated; full: the decoder blocks, then the inbox fills]
      -> parkwatch/analytics.py   journal (fsync), park clocks, then for each point:
           kpi/ engine   -> park_kpi records -> the rules engine, and park_kpi points
           rules/ engine -> alert transitions -> alerts points, and notify/ (never blocks)
           once recovered (snapshot + journal): notify/ is seeded with the alerts still firing
      -> writes   [telemetry, park_kpi and alerts points, and every 10 s the collector's own
                   metrics (parkwatch/selfmetrics.py); full: analytics / self-metrics block]
      -> collector/writer.py batcher -> batches [full: the batcher blocks] -> writer workers
           -> sink (collector/adapters/influx_v1.py | influx_v2.py), or collector/spool.py
           -> ack (in arrival order; derived points leave the analytics outbox instead)

Nothing is dropped anywhere on the way to InfluxDB: every full queue blocks its producer, and
back-pressure ends at the broker, which keeps what we have not acked. With no engine enabled the
analytics stage is left out (decoder -> writes). Shutdown drains: stop reading, let every queue
empty, flush the batch, wait for writes and acks, write a state snapshot, then disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry

from collector.adapters.mqtt import MqttSource
from collector.deadletter import DeadLetterFile, run_dead_letters
from collector.decode import Decoder, run_decoder
from collector.messages import DeadLetter, RawMessage
from collector.metrics import Metrics
from collector.sink import Sink, make_sink
from collector.spool import Spool
from collector.writer import Writer
from kpi import KpiEngine
from notify.dispatcher import Dispatcher
from parkwatch.analytics import Analytics, is_derived_ticket
from parkwatch.clock import ParkClocks
from parkwatch.errors import SpoolError
from parkwatch.events import Alert, AlertState, Engine, Output
from parkwatch.http import HttpServer
from parkwatch.points import Point
from parkwatch.selfmetrics import SelfMetrics
from parkwatch.settings import Settings
from rules import RulesEngine

__all__ = ["Collector"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 30.0
DEAD_LETTER_QUEUE: Final = 10_000
NOTIFY_DRAIN_S: Final = 10.0
"""At shutdown, how long notifications still in flight may take."""


def build_engines(
    settings: Settings, clocks: ParkClocks, registry: CollectorRegistry
) -> list[Engine]:
    """The stateful engines, in the order they see each point (KPIs first: rules read them)."""
    engines: list[Engine] = []
    if settings.kpi.enabled:
        engines.append(KpiEngine(settings.kpi, settings.parks, clocks, registry))
    if settings.rules.enabled:
        # Loads and checks the rule files: a broken one stops the start (RuleError).
        engines.append(RulesEngine(settings.rules, settings.parks, clocks, registry))
    return engines


@dataclass(frozen=True, slots=True)
class _Queues:
    """The bounded queues between the stages (see the module docstring for each one's policy)."""

    inbox: asyncio.Queue[RawMessage]
    points: asyncio.Queue[Point]
    writes: asyncio.Queue[Point]
    dead: asyncio.Queue[DeadLetter]


class Collector:
    """Runs the pipeline until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        sink: Sink | None = None,
        source_factory: type[MqttSource] = MqttSource,
    ) -> None:
        self.settings = settings
        self._source_factory = source_factory
        self.metrics = Metrics()
        self._sink = sink or make_sink(settings.influx)
        self.connected = asyncio.Event()
        """Set while subscribed to the broker."""
        self.started = asyncio.Event()
        """Set once every stage runs and ``http_port`` is known."""
        self.http_port: int | None = None
        self._source: MqttSource | None = None
        self._writer: Writer | None = None
        self._analytics: Analytics | None = None
        self._dead_file = DeadLetterFile(settings.deadletter)
        self._spool_unusable: str | None = None
        self._observers: list[Callable[[Point], None]] = []
        self._output_observers: list[Callable[[Output], None]] = []
        self.clocks = ParkClocks()
        """Every park's event-time clock, shared by the engines."""
        self.engines: list[Engine] = []
        self.dispatcher: Dispatcher | None = None
        """The notification stage, when receivers are configured (and an engine emits alerts)."""

    def observe(self, observer: Callable[[Point], None]) -> None:
        """Call ``observer`` with every validated point (on the decoder's path: keep it cheap)."""
        self._observers.append(observer)

    def observe_outputs(self, observer: Callable[[Output], None]) -> None:
        """Call ``observer`` with every KPI record and alert transition the engines emit.

        Register before ``run``, which builds the analytics stage (the demo's live view).
        """
        self._output_observers.append(observer)

    def active_alerts(self) -> list[Alert]:
        """Pending and firing alerts of the rules engine (none when it is disabled)."""
        for engine in self.engines:
            if isinstance(engine, RulesEngine):
                return engine.active_alerts()
        return []

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and return."""
        s = self.settings
        # A batch should not need more unacked messages than the broker may send us at once.
        batch_size = max(1, min(s.writer.batch_size, s.mqtt.receive_maximum // 2))
        q = _Queues(
            inbox=asyncio.Queue(s.mqtt.receive_maximum),
            points=asyncio.Queue(batch_size * 2),
            writes=asyncio.Queue(batch_size * 2),
            dead=asyncio.Queue(DEAD_LETTER_QUEUE),
        )
        for name, queue in (
            ("inbox", q.inbox),
            ("points", q.points),
            ("writes", q.writes),
            ("dead_letters", q.dead),
        ):
            self.metrics.watch_queue(name, queue.qsize)

        # A path that can never take a record fails the start (ConfigError), before we connect.
        self._dead_file.check()
        async with contextlib.AsyncExitStack() as resources:
            # Each resource is released in reverse order, also when a later one fails to start.
            spool = await self._open_spool(resources)
            await self._sink.start()
            resources.push_async_callback(self._sink.close)
            source = self._source_factory(
                s.mqtt,
                q.inbox,
                self.metrics,
                connected=self.connected,
                max_payload_bytes=s.ingest.max_payload_bytes,
                oversize_keep_bytes=s.deadletter.max_payload_chars,
            )
            self._source = source
            analytics = self._analytics = self._build_analytics()
            if analytics is not None:
                await analytics.open()
                resources.push_async_callback(analytics.close)
            writer = Writer(
                s.writer.model_copy(update={"batch_size": batch_size}),
                self._sink,
                self.metrics,
                settle=self._settle,
                dead_letters=q.dead,
                spool=spool,
            )
            self._writer = writer
            self.metrics.watch_queue("batches", writer.batches.qsize)
            http = HttpServer(
                s.http.host, s.http.port, self.metrics, self._health, alerts=self.active_alerts
            )
            await http.start()
            resources.push_async_callback(http.stop)
            self.http_port = http.port
            log.info(
                "collector up: mqtt %s topic %s -> %s; engines: %s; http :%d",
                s.mqtt.redacted_url(),
                source.subscription,
                self._sink.name,
                ", ".join(e.name for e in self.engines) or "none",
                http.port,
            )
            decoder = Decoder(s.ingest, self.metrics, topic_prefix=s.mqtt.topic_prefix)
            await self._run_stages(
                stop, source=source, decoder=decoder, writer=writer, analytics=analytics, q=q
            )
        log.info("collector stopped")

    def _build_analytics(self) -> Analytics | None:
        """The stateful stage, or None when no engine is enabled."""
        self.engines = build_engines(self.settings, self.clocks, self.metrics.registry)
        if not self.engines:
            return None
        notify = self.settings.notify
        if notify.enabled and notify.receivers:
            self.dispatcher = Dispatcher(notify, self.metrics.registry, parks=self.settings.parks)
        analytics = Analytics(
            self.settings.state,
            self.engines,
            self.clocks,
            self.metrics.registry,
            listening=self.connected.is_set,
            notify=self.dispatcher.submit if self.dispatcher is not None else None,
            recovered=self._seed_notifications if self.dispatcher is not None else None,
        )
        for observer in self._output_observers:
            analytics.observe(observer)
        return analytics

    def _seed_notifications(self) -> None:
        """After a restart, alerts that still fire keep being re-sent to Alertmanager (else it
        lets them expire) and are not notified anywhere a second time."""
        assert self.dispatcher is not None
        firing = [alert for alert in self.active_alerts() if alert.state is AlertState.FIRING]
        self.dispatcher.seed(firing)
        if firing:
            log.info(
                "notify: %d alerts still fire after the restart: re-sent to Alertmanager, "
                "not notified again",
                len(firing),
            )

    def _settle(self, tickets: Iterable[int]) -> None:
        """Safe points: MQTT messages are acked, derived points leave the analytics outbox."""
        source, analytics = self._source, self._analytics
        assert source is not None
        if analytics is None:
            source.settle(tickets)
            return
        messages: list[int] = []
        derived: list[int] = []
        for ticket in tickets:
            (derived if is_derived_ticket(ticket) else messages).append(ticket)
        source.settle(messages)
        if derived:
            analytics.settled(derived)

    async def _open_spool(self, resources: contextlib.AsyncExitStack) -> Spool | None:
        """Open the spool; if its disk fails, run without it (acking only what is written)."""
        s = self.settings.spool
        spool = Spool(s.directory, max_bytes=s.max_bytes, segment_bytes=s.segment_bytes)
        try:
            await spool.open()
        except SpoolError as exc:
            # Not fatal: a crash loop helps nobody. Without a spool nothing is acked while the
            # database is down, so the broker keeps the data; health says so.
            self._spool_unusable = f"could not be opened, running without it: {exc}"
            self.metrics.spool_errors.labels("open").inc()
            log.error(  # noqa: TRY400 - the message says it all
                "spool %s %s; while the database is down nothing is acked and the broker keeps "
                "the messages",
                s.directory,
                self._spool_unusable,
            )
            return None
        resources.push_async_callback(spool.close)
        return spool

    async def _run_stages(
        self,
        stop: asyncio.Event,
        *,
        source: MqttSource,
        decoder: Decoder,
        writer: Writer,
        analytics: Analytics | None,
        q: _Queues,
    ) -> None:
        """Every long-running task, in one TaskGroup; on ``stop``, drain and cancel them."""
        dead_file = self._dead_file
        # Without engines the decoder feeds the writer directly.
        decoded = q.points if analytics is not None else q.writes
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(source.run(), name="mqtt-connection"),
                group.create_task(source.run_misc(), name="mqtt-housekeeping"),
                group.create_task(source.run_pump(), name="mqtt-overflow-pump"),
                group.create_task(source.run_retained(), name="mqtt-retained-ledger"),
                group.create_task(
                    run_decoder(decoder, q.inbox, decoded, q.dead, self._observers),
                    name="decoder",
                ),
                group.create_task(
                    run_dead_letters(dead_file, q.dead, self._settle, self.metrics),
                    name="dead-letters",
                ),
                group.create_task(writer.run_batcher(q.writes), name="batcher"),
                group.create_task(writer.run_replayer(), name="spool-replayer"),
            ]
            tasks += [
                group.create_task(writer.run_worker(), name=f"writer-{n}")
                for n in range(self.settings.writer.max_concurrent_writes)
            ]
            self_metrics = SelfMetrics(self.metrics.registry, instance=self.settings.mqtt.client_id)
            self_metrics_task = group.create_task(
                self_metrics.run(q.writes.put), name="self-metrics"
            )
            tasks.append(self_metrics_task)
            if analytics is not None:
                tasks += [
                    group.create_task(analytics.run(q.points, q.writes), name="analytics"),
                    group.create_task(analytics.run_ticker(q.writes), name="analytics-ticker"),
                ]
            if self.dispatcher is not None:
                tasks.append(group.create_task(self.dispatcher.run(), name="notify"))
            self.started.set()
            await stop.wait()
            log.info("stopping: draining the pipeline")
            self_metrics_task.cancel()  # nothing more to say
            await self._drain(source, writer, q)
            for task in tasks:
                task.cancel()

    async def _drain(self, source: MqttSource, writer: Writer, q: _Queues) -> None:
        source.pause()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await q.inbox.join()
                await q.points.join()
                writer.flush()
                await q.writes.join()
                await writer.batches.join()
                await q.dead.join()
                if self.dispatcher is not None:
                    await self.dispatcher.drain(NOTIFY_DRAIN_S)
        except TimeoutError:
            # What is not written stays unacked: the broker redelivers it to the next run.
            log.warning(
                "pipeline did not drain in %.0f s; leaving the rest to the broker", DRAIN_TIMEOUT_S
            )
        await source.disconnect()

    async def _health(self) -> dict[str, Any]:
        source, writer = self._source, self._writer
        mqtt_ok = source is not None and source.connected.is_set()
        dead_error = self._dead_file.error
        analytics = self._analytics
        state_ok = analytics is None or analytics.journal_ok
        # Only redacted URLs and names here: /healthz may be served on 0.0.0.0 (the Dockerfile).
        return {
            "mqtt": {"ok": mqtt_ok, "url": self.settings.mqtt.redacted_url()},
            "sink": await self._sink_health(writer),
            "spool": self._spool_health(writer),
            "deadletter": {
                "ok": dead_error is None,
                "detail": f"{dead_error}: not acking those messages" if dead_error else "ok",
            },
            "state": {
                "ok": state_ok,
                "detail": "ok" if state_ok else "the state journal cannot be written: not acking",
            },
        }

    async def _sink_health(self, writer: Writer | None) -> dict[str, Any]:
        """Up means: InfluxDB answers its ping, the target exists, and writes succeed."""
        if not await self._sink.ping():
            problem: str | None = "does not answer its ping"
        else:
            problem = self._sink.problem or (writer.write_failure if writer else None)
        check: dict[str, Any] = {"ok": problem is None, "target": self._sink.name}
        check["detail"] = problem or "ok"
        return check

    def _spool_health(self, writer: Writer | None) -> dict[str, Any]:
        """Up means: the spool is open and no batch is held unacked because it refused it."""
        problem = self._spool_unusable or (writer.spool_problem if writer else "not started")
        return {"ok": problem is None, "detail": problem or "ok"}
