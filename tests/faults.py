"""Harness for the delivery fault tests: the collector as a child process, a numbered publisher.

The fault tests (tests/collector/test_delivery_faults.py) crash and restart things, so the
collector under test runs as a separate process (``python -m parkwatch run``, configured through
``PARKWATCH_*`` environment variables) and is observed only from outside: its ``/metrics`` and
``/healthz``, its log file, its spool directory and what reached InfluxDB. Everything here is
synchronous (threads, ``subprocess``, ``urllib``): the tests block on real processes and poll them
with deadlines (:func:`wait_until`, built on the project's one poller), never sleep and hope.

* :class:`CollectorProcess` starts, kills (SIGKILL), freezes (SIGSTOP), terminates (SIGTERM, or
  signals and waits separately) and restarts one collector with a fixed HTTP port, MQTT client
  id, spool dir and dead-letter file.
* :class:`Publisher` is a paho-mqtt 2.x client in its own network thread, with a persistent session
  (``clean_session=False``, fixed client id) so it resends what the broker had not acknowledged
  after a broker restart; "accepted" means PUBACKed by the broker.
* :func:`numbered_message` builds message ``i``: a unique timestamp per ``i``, so a redelivered
  message overwrites its own point and InfluxDB holds each number at most once.
* :func:`influx_seqs` reads the numbers back, window by window (no row limit can truncate it).
* :func:`small_disk` mounts a small tmpfs, a real filesystem that fills up (ENOSPC).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client.parser import text_string_to_metric_families

from collector.spool import Spool
from parkwatch.localservers import InfluxDB1, Mosquitto, free_port, wait_for

__all__ = [
    "DEVICES",
    "FAULT_SCALE",
    "MEASUREMENT",
    "CollectorProcess",
    "Publisher",
    "SpooledRecord",
    "fill_disk",
    "influx_count",
    "influx_seqs",
    "numbered_message",
    "numbered_stream",
    "numbered_topic",
    "read_spool",
    "scaled",
    "seqs_of_lines",
    "small_disk",
    "wait_until",
]

_T = TypeVar("_T")

FAULT_SCALE: Final = float(os.environ.get("PARKWATCH_FAULT_SCALE", "1"))
"""Multiplies message counts; ``PARKWATCH_FAULT_SCALE=10`` runs the fault tests ten times longer."""

MEASUREMENT: Final = "microgrid"
DEVICES: Final = 16
POLL_S: Final = 0.05  # between probes of a polled condition
HTTP_TIMEOUT_S: Final = 5.0
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 45.0  # SIGTERM drains for up to 30 s (service.DRAIN_TIMEOUT_S)
LOG_TAIL_LINES: Final = 60
QUERY_WINDOW: Final = 5000  # numbers (= milliseconds) per InfluxDB query


def scaled(count: int) -> int:
    """``count`` times ``PARKWATCH_FAULT_SCALE``, at least 1."""
    return max(1, round(count * FAULT_SCALE))


def wait_until(
    probe: Callable[[], _T],
    *,
    timeout: float,
    what: str,
    collector: CollectorProcess | None = None,
    context: Callable[[], str] | None = None,
) -> _T:
    """Poll ``probe`` with `parkwatch.localservers.wait_for` until it returns something truthy.

    Adds what the fault tests need: a probe raising ``OSError`` (server not answering yet)
    counts as false; the wait fails at once if ``collector`` (which must stay up meanwhile)
    exits; a timeout is an ``AssertionError`` with ``context()`` and the collector's log tail.
    """

    def checked() -> _T | None:
        if collector is not None and collector.returncode is not None:
            raise AssertionError(
                f"collector exited with {collector.returncode} while waiting for {what}\n"
                f"{collector.log_tail()}"
            )
        try:
            return probe()
        except OSError:
            return None

    try:
        return wait_for(checked, timeout=timeout, what=what, interval=POLL_S)
    except TimeoutError as exc:
        extra = context() if context is not None else ""
        tail = collector.log_tail() if collector is not None else ""
        raise AssertionError(f"{exc}\n{extra}\n{tail}") from None


# -- messages -------------------------------------------------------------------------------


def numbered_topic(prefix: str, i: int, devices: int = DEVICES) -> str:
    """The topic of message ``i``: device ``m{i % devices}``."""
    return f"{prefix}/fault/{MEASUREMENT}/m{i % devices}/telemetry"


def numbered_message(
    prefix: str,
    i: int,
    base_ms: int,
    *,
    pad_fields: int = 0,
    extra: Mapping[str, object] | None = None,
    devices: int = DEVICES,
) -> tuple[str, bytes]:
    """Message ``i``: ``ts = base_ms + i`` (one point per number), ``seq = i``.

    ``pad_fields`` adds that many numeric extra fields (each ~20 bytes of line protocol), to reach
    a byte volume with fewer messages; ``extra`` adds fields as given; ``devices`` is how many
    devices the numbers are spread over.
    """
    payload: dict[str, object] = {"ts": base_ms + i, "seq": i, "pv_kw": round(i % 997 * 0.5, 1)}
    for n in range(pad_fields):
        payload[f"aux_{n:02d}_kw"] = 1000.0 + n + i % 100 / 100
    payload.update(extra or {})
    return numbered_topic(prefix, i, devices), orjson.dumps(payload)


def seqs_of_lines(lines: bytes, base_ms: int) -> list[int]:
    """The numbers of the line-protocol lines in ``lines`` (read from their timestamps)."""
    return [int(line.rsplit(b" ", 1)[1]) - base_ms for line in lines.split(b"\n") if line]


# -- InfluxDB ---------------------------------------------------------------------------------


def influx_count(influx: InfluxDB1, database: str) -> int:
    """How many numbered points the database holds (0 while it does not answer)."""
    try:
        # S608: InfluxQL built from a constant, not from input.
        rows = influx.query(database, f'SELECT count("seq") FROM "{MEASUREMENT}"')  # noqa: S608
    except OSError:
        return 0
    return int(rows[0]["count"]) if rows else 0


def influx_seqs(influx: InfluxDB1, database: str, base_ms: int, upto: int) -> list[int]:
    """Every number stored, once per point, read in windows of ``QUERY_WINDOW`` numbers.

    A point whose timestamp does not match its ``seq`` would be a wrong point: it is returned as
    ``-1 - seq`` so that it shows up as an unexpected number.
    """
    seqs: list[int] = []
    for low in range(0, max(upto, 1), QUERY_WINDOW):
        start_ns = (base_ms + low) * 1_000_000
        end_ns = (base_ms + low + QUERY_WINDOW) * 1_000_000
        rows = influx.query(
            database,
            f'SELECT "seq" FROM "{MEASUREMENT}" WHERE time >= {start_ns} AND time < {end_ns}',  # noqa: S608
        )
        for row in rows:
            seq = int(row["seq"])
            seqs.append(seq if row["time"] - base_ms == seq else -1 - seq)
    return seqs


# -- the spool, read from outside -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One pending spool record: the segment file it sits in and the payload (line protocol)."""

    segment: Path
    offset: int
    payload: bytes


def read_spool(directory: Path) -> list[SpooledRecord]:
    """Every pending record of a spool nobody else has open, oldest first, read with `Spool`."""

    async def read() -> list[SpooledRecord]:
        # max_bytes only bounds appends, which this never makes.
        async with Spool(directory, max_bytes=2**40) as spool:
            records = await spool.read(max_records=10**9)
        return [
            SpooledRecord(
                directory / f"{r.position.segment:016d}.seg", r.position.offset, r.payload
            )
            for r in records
        ]

    return asyncio.run(read())


# -- a disk that fills up ----------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``, e.g. ``"1m"``) at ``path`` for the block.

    Skips the test when mounting is not permitted (it needs root or CAP_SYS_ADMIN).
    """
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs (needs root): {mount.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazy: a child the test could not stop may still hold a file open in it.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_disk(path: Path) -> int:
    """Write ``path`` until its filesystem is full; return the bytes it took."""
    written = 0
    with path.open("wb", buffering=0) as f:
        chunk = bytes(4096)
        with contextlib.suppress(OSError):
            while True:
                written += f.write(chunk)
    return written


# -- the collector process --------------------------------------------------------------------

_RUNNING: set[CollectorProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Kill collectors a test could not stop (pytest interrupted), as localservers does."""
    for process in list(_RUNNING):
        process.close()


class CollectorProcess:
    """``python -m parkwatch run`` as a child process with a fixed identity across restarts.

    Same HTTP port, MQTT client id, spool directory and dead-letter file on every start; stdout and
    stderr are appended to ``log_path`` (each start marked), whose tail goes into failure messages.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        broker: Mosquitto,
        influx: InfluxDB1,
        database: str,
        topic_prefix: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.spool_dir = workdir / "spool"
        self.deadletter_path = workdir / "deadletter.jsonl"
        self.log_path = workdir / "collector.log"
        self.client_id = f"collector-{topic_prefix}"[:64]
        settings = {
            "PARKWATCH_MQTT__URL": broker.url,
            "PARKWATCH_MQTT__CLIENT_ID": self.client_id,
            "PARKWATCH_MQTT__TOPIC_PREFIX": topic_prefix,
            "PARKWATCH_MQTT__RECONNECT_MIN_S": "0.1",
            "PARKWATCH_MQTT__RECONNECT_MAX_S": "0.5",
            "PARKWATCH_INFLUX__URL": influx.url,
            "PARKWATCH_INFLUX__DATABASE": database,
            "PARKWATCH_INFLUX__TIMEOUT_S": "5",
            "PARKWATCH_SPOOL__DIRECTORY": str(self.spool_dir),
            "PARKWATCH_DEADLETTER__PATH": str(self.deadletter_path),
            "PARKWATCH_HTTP__PORT": str(self.http_port),
            "PARKWATCH_WRITER__BATCH_SIZE": "200",
            "PARKWATCH_WRITER__FLUSH_INTERVAL_S": "0.1",
            "PARKWATCH_WRITER__RETRY_MAX_ATTEMPTS": "2",
            "PARKWATCH_WRITER__RETRY_INITIAL_S": "0.05",
            "PARKWATCH_WRITER__RETRY_MAX_S": "0.2",
            "PARKWATCH_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PARKWATCH_")}
        self.env = {**inherited, **settings, "PYTHONUNBUFFERED": "1"}
        self.starts = 0
        self.kills = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"CollectorProcess(port={self.http_port}, workdir={str(self.workdir)!r})"

    # -- life cycle -------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The process id of the running child (to read /proc/PID/status)."""
        assert self._process is not None, "collector never started"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); the exit status once it has ended."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = START_TIMEOUT_S) -> None:
        """Start the process and wait until its HTTP endpoint answers (with any status)."""
        assert not self.running, "collector already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"===== test harness: start #{self.starts} =====\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "parkwatch", "run"],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for it
            )
        _RUNNING.add(self)
        wait_until(
            lambda: self._answers("/healthz"),
            timeout=timeout,
            what=f"collector start #{self.starts} serving http :{self.http_port}",
            collector=self,
        )

    def wait_subscribed(self, *, timeout: float = 20.0) -> None:
        """Wait until the collector is connected and subscribed to the broker."""
        wait_until(
            lambda: self.metric("parkwatch_mqtt_connected") == 1,
            timeout=timeout,
            what="collector subscribed",
            collector=self,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing is drained or flushed."""
        process = self._process
        assert process is not None, "collector never started"
        assert process.poll() is None, "collector is not running"
        process.kill()
        process.wait()
        _RUNNING.discard(self)
        self.kills += 1
        self._mark("killed with SIGKILL")

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets but reads, writes and acks nothing."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._mark("frozen with SIGSTOP")

    def terminate(self, *, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (drain, then exit) and return the exit status."""
        self.send_sigterm()
        return self.wait_exit(timeout=timeout)

    def send_sigterm(self) -> None:
        """SIGTERM, without waiting: the collector starts draining."""
        process = self._process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        self._mark("sent SIGTERM")

    def wait_exit(self, *, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the process to exit (after `send_sigterm`) and return the exit status."""
        process = self._process
        assert process is not None
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(
                f"collector did not exit {timeout:g} s after SIGTERM\n{self.log_tail()}"
            ) from None
        _RUNNING.discard(self)
        self._mark(f"exited with {code} after SIGTERM")
        return code

    def close(self) -> None:
        """Kill the process if it still runs (test teardown, also after a failure)."""
        process = self._process
        _RUNNING.discard(self)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
            self._mark("killed at teardown")

    def _mark(self, event: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"===== test harness: {event} =====\n".encode())

    # -- observation ------------------------------------------------------------------------

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        request = urllib.request.Request(url)
        try:
            # S310 (file:/custom schemes): the URL is a loopback http:// one built here.
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _answers(self, path: str) -> bool:
        self._get(path)
        return True

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /healthz``: the status code and the JSON body."""
        status, body = self._get("/healthz")
        data: dict[str, Any] = json.loads(body)
        return status, data

    def check_ok(self, name: str) -> bool | None:
        """Whether health check ``name`` (mqtt, sink, spool) passes; None if not reported."""
        _, body = self.health()
        check = body.get("checks", {}).get(name)
        return None if check is None else bool(check.get("ok"))

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as ``{'name{label="v"}': value}`` (labels sorted; bare name if none)."""
        status, body = self._get("/metrics")
        if status != 200:
            raise OSError(f"/metrics answered {status}")
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[_sample_key(sample.name, sample.labels)] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """One sample from ``/metrics``; ``KeyError`` if the collector does not export it."""
        samples = self.metrics()
        key = _sample_key(name, labels)
        if key not in samples:
            raise KeyError(f"{key} not in /metrics: {sorted(samples)[:50]}")
        return samples[key]

    def log_text(self) -> str:
        """The whole log, every start included."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the log, for failure messages."""
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- collector log tail ({self.log_path}) ---\n{tail}"


def _sample_key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


# -- the publisher ----------------------------------------------------------------------------


class Publisher:
    """A QoS 1 publisher with a persistent session, in its own paho network thread.

    Every message gets an integer key (the number ``i`` for numbered messages); ``accepted``
    holds the keys the broker has PUBACKed. The client resends unacknowledged messages after a
    reconnect and queues without limit while disconnected (``max_queued_messages_set(0)``).
    """

    def __init__(self, broker: Mosquitto, *, client_id: str, max_inflight: int = 500) -> None:
        self.broker = broker
        self.client_id = client_id
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._lock = threading.Lock()
        self._key_of_mid: dict[int, int] = {}
        self._early_acks: set[int] = set()  # PUBACKs that overtook the bookkeeping of their mid
        self._accepted: set[int] = set()
        self.published = 0
        self.connects = 0
        self.disconnects = 0
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._stop_thread = threading.Event()

    # paho callbacks, on the network thread. on_publish runs under paho's own message lock:
    # never call into the client while holding self._lock, or the two locks could deadlock.
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self.connects += 1
        self._connected.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self.disconnects += 1
        self._connected.clear()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        with self._lock:
            key = self._key_of_mid.pop(mid, None)
            if key is None:
                self._early_acks.add(mid)
            else:
                self._accepted.add(key)

    def connect(self, *, timeout: float = 10.0) -> None:
        """Connect and start the network thread (which reconnects on its own)."""
        self._client.connect(self.broker.host, self.broker.port, keepalive=10)
        self._client.loop_start()
        wait_until(self._connected.is_set, timeout=timeout, what=f"publisher {self.client_id}")

    def close(self) -> None:
        """Stop publishing, disconnect and stop the network thread."""
        if self._thread is not None:
            self._stop_thread.set()
            self._thread.join(30)
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def publish(self, key: int, topic: str, payload: bytes) -> None:
        """Publish one message at QoS 1 (queued if disconnected); count it under ``key``."""
        info = self._client.publish(topic, payload, qos=1)
        with self._lock:
            self.published += 1
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                self._accepted.add(key)
            else:
                self._key_of_mid[info.mid] = key

    def publish_many(self, messages: Iterable[tuple[int, str, bytes]]) -> int:
        """Publish ``(key, topic, payload)`` triples at once; return how many."""
        count = 0
        for key, topic, payload in messages:
            self.publish(key, topic, payload)
            count += 1
        return count

    def start_stream(
        self, messages: Iterable[tuple[int, str, bytes]], *, rate: float | None = None
    ) -> None:
        """Publish ``messages`` from a background thread, ``rate`` per second (None: at once)."""
        assert self._thread is None or not self._thread.is_alive(), "a stream is running"
        self._stop_thread = threading.Event()
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._stream, args=(messages, rate), name=f"publisher-{self.client_id}"
        )
        self._thread.start()

    def _stream(self, messages: Iterable[tuple[int, str, bytes]], rate: float | None) -> None:
        started = time.monotonic()
        try:
            for n, (key, topic, payload) in enumerate(messages):
                if self._stop_thread.is_set():
                    return
                if rate is not None:
                    # Pacing the load, not waiting for anything: message n is due at n / rate.
                    delay = started + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                self.publish(key, topic, payload)
        except Exception as exc:  # noqa: BLE001 - handed to the test by join_stream
            self._thread_error = exc

    @property
    def streaming(self) -> bool:
        """Whether the background stream is still publishing."""
        return self._thread is not None and self._thread.is_alive()

    def join_stream(self, *, timeout: float = 120.0) -> None:
        """Wait for the background stream to have published everything."""
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), f"publisher still streaming after {timeout:g} s"
        if self._thread_error is not None:
            raise AssertionError(f"publisher failed: {self._thread_error!r}")

    @property
    def accepted_count(self) -> int:
        """How many messages the broker has PUBACKed."""
        with self._lock:
            return len(self._accepted)

    def accepted(self) -> set[int]:
        """The keys of the messages the broker has PUBACKed."""
        with self._lock:
            return set(self._accepted)

    def wait_accepted(self, count: int, *, timeout: float = 60.0) -> None:
        """Wait until ``count`` messages in all are PUBACKed."""
        wait_until(
            lambda: self.accepted_count >= count,
            timeout=timeout,
            what=f"{count} messages PUBACKed by the broker",
            context=lambda: f"accepted {self.accepted_count} of {self.published} published",
        )


def numbered_stream(
    prefix: str,
    numbers: Iterable[int],
    base_ms: int,
    *,
    pad_fields: int = 0,
    extra: Callable[[int], Mapping[str, object]] | None = None,
    devices: int = DEVICES,
) -> Iterator[tuple[int, str, bytes]]:
    """``(i, topic, payload)`` for each number, for `Publisher.start_stream`; ``extra(i)`` adds
    fields to message ``i``."""
    for i in numbers:
        topic, payload = numbered_message(
            prefix,
            i,
            base_ms,
            pad_fields=pad_fields,
            extra=extra(i) if extra is not None else None,
            devices=devices,
        )
        yield i, topic, payload
