"""The collector: every stage wired together under one TaskGroup.

::

    MQTT (adapters/mqtt.py)
      -> inbox    [raw messages; full: the MQTT reader pauses, the broker holds QoS 1 messages]
      -> decode.py  -- bad input --> dead [full: decoder blocks] -> deadletter.py -> ack
      -> points   [full: decoder blocks, then inbox fills]
      -> writer.py batcher -> batches [full: batcher blocks] -> writer workers
           -> sink (adapters/influx_v1.py | influx_v2.py), or spool.py when it is down -> ack

Nothing is dropped anywhere: every full queue blocks its producer, and back-pressure ends at the
broker, which keeps what we have not acked. Shutdown drains: stop reading, let every queue
empty, flush the batch, wait for writes and acks, then disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from collector.adapters.mqtt import MqttSource
from collector.deadletter import DeadLetterFile, run_dead_letters
from collector.decode import Decoder, run_decoder
from collector.messages import DeadLetter, RawMessage
from collector.metrics import Metrics
from collector.sink import Sink, make_sink
from collector.spool import Spool
from collector.writer import Writer
from parkwatch.http import HttpServer
from parkwatch.points import Point
from parkwatch.settings import Settings

__all__ = ["Collector"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 30.0
DEAD_LETTER_QUEUE: Final = 10_000


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
        self._observers: list[Callable[[Point], None]] = []

    def observe(self, observer: Callable[[Point], None]) -> None:
        """Call ``observer`` with every validated point (on the decoder's path: keep it cheap)."""
        self._observers.append(observer)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and return."""
        s = self.settings
        inbox: asyncio.Queue[RawMessage] = asyncio.Queue(s.mqtt.receive_maximum)
        # A batch should not need more unacked messages than the broker may send us at once.
        batch_size = max(1, min(s.writer.batch_size, s.mqtt.receive_maximum // 2))
        writer_settings = s.writer.model_copy(update={"batch_size": batch_size})
        points: asyncio.Queue[Point] = asyncio.Queue(batch_size * 2)
        dead: asyncio.Queue[DeadLetter] = asyncio.Queue(DEAD_LETTER_QUEUE)
        for name, queue in (("inbox", inbox), ("points", points), ("dead_letters", dead)):
            self.metrics.watch_queue(name, queue.qsize)

        async with contextlib.AsyncExitStack() as resources:
            # Each resource is released in reverse order, also when a later one fails to start.
            spool = Spool(
                s.spool.directory, max_bytes=s.spool.max_bytes, segment_bytes=s.spool.segment_bytes
            )
            await spool.open()
            resources.push_async_callback(spool.close)
            await self._sink.start()
            resources.push_async_callback(self._sink.close)
            source = self._source_factory(
                s.mqtt,
                inbox,
                self.metrics,
                connected=self.connected,
                max_payload_bytes=s.ingest.max_payload_bytes,
                oversize_keep_bytes=s.deadletter.max_payload_chars,
            )
            self._source = source
            writer = Writer(
                writer_settings,
                self._sink,
                self.metrics,
                settle=source.settle,
                dead_letters=dead,
                spool=spool,
            )
            self._writer = writer
            self.metrics.watch_queue("batches", writer.batches.qsize)
            http = HttpServer(s.http.host, s.http.port, self.metrics, self._health)
            await http.start()
            resources.push_async_callback(http.stop)
            self.http_port = http.port
            log.info(
                "collector up: mqtt %s topic %s -> %s; http :%d",
                s.mqtt.redacted_url(),
                source.subscription,
                self._sink.name,
                http.port,
            )
            decoder = Decoder(s.ingest, self.metrics, topic_prefix=s.mqtt.topic_prefix)
            await self._run_stages(
                stop,
                source=source,
                decoder=decoder,
                writer=writer,
                inbox=inbox,
                points=points,
                dead=dead,
            )
        log.info("collector stopped")

    async def _run_stages(
        self,
        stop: asyncio.Event,
        *,
        source: MqttSource,
        decoder: Decoder,
        writer: Writer,
        inbox: asyncio.Queue[RawMessage],
        points: asyncio.Queue[Point],
        dead: asyncio.Queue[DeadLetter],
    ) -> None:
        """Every long-running task, in one TaskGroup; on ``stop``, drain and cancel them."""
        dead_file = DeadLetterFile(self.settings.deadletter)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(source.run(), name="mqtt-connection"),
                group.create_task(source.run_misc(), name="mqtt-housekeeping"),
                group.create_task(source.run_pump(), name="mqtt-overflow-pump"),
                group.create_task(source.run_retained(), name="mqtt-retained-ledger"),
                group.create_task(
                    run_decoder(decoder, inbox, points, dead, self._observers), name="decoder"
                ),
                group.create_task(
                    run_dead_letters(dead_file, dead, source.settle, self.metrics),
                    name="dead-letters",
                ),
                group.create_task(writer.run_batcher(points), name="batcher"),
                group.create_task(writer.run_replayer(), name="spool-replayer"),
            ]
            tasks += [
                group.create_task(writer.run_worker(), name=f"writer-{n}")
                for n in range(self.settings.writer.max_concurrent_writes)
            ]
            self.started.set()
            await stop.wait()
            log.info("stopping: draining the pipeline")
            await self._drain(source, writer, inbox, points, dead)
            for task in tasks:
                task.cancel()

    async def _drain(
        self,
        source: MqttSource,
        writer: Writer,
        inbox: asyncio.Queue[RawMessage],
        points: asyncio.Queue[Point],
        dead: asyncio.Queue[DeadLetter],
    ) -> None:
        source.pause()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await inbox.join()
                writer.flush()
                await points.join()
                await writer.batches.join()
                await dead.join()
        except TimeoutError:
            # What is not written stays unacked: the broker redelivers it to the next run.
            log.warning(
                "pipeline did not drain in %.0f s; leaving the rest to the broker", DRAIN_TIMEOUT_S
            )
        await source.disconnect()

    async def _health(self) -> dict[str, Any]:
        source, writer = self._source, self._writer
        mqtt_ok = source is not None and source.connected.is_set()
        sink_ok = await self._sink.ping()
        spool_ok = writer is not None and not writer.spool_full
        return {
            "mqtt": {"ok": mqtt_ok, "url": self.settings.mqtt.redacted_url()},
            "sink": {"ok": sink_ok, "target": self._sink.name},
            "spool": {"ok": spool_ok, "detail": "full: not acking" if not spool_ok else "ok"},
        }
