"""``parkwatch run`` as a child process for benchmarks, observed only from outside.

Default settings except what must differ per run (the broker and database URLs, the HTTP port,
the client id and topic prefix, the database name, the spool, dead-letter and state paths) and
whatever ``extra_env`` adds (e.g. how two collectors split the parks). Progress is read from
``/healthz`` and ``/metrics``; CPU time and memory from ``/proc``. ``bench.drain`` times it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from bench.procstat import cpu_seconds, memory_mb
from parkwatch.localservers import InfluxDB1, Mosquitto, free_port

__all__ = ["PACKAGES", "CollectorProcess", "Histogram", "Scrape", "compile_sources"]

HTTP_TIMEOUT_S: Final = 5.0
STOP_TIMEOUT_S: Final = 45.0  # SIGTERM drains for up to 30 s (service.DRAIN_TIMEOUT_S)
LOG_TAIL_LINES: Final = 30
ENGINES_LOGGED: Final = re.compile(r"engines: ([^;\n]*)")

PACKAGES: Final = ("parkwatch", "collector", "kpi", "rules", "notify", "dashboards", "simulators")
ROOT: Final = Path(__file__).resolve().parent.parent


def compile_sources() -> None:
    """Byte-compile parkwatch's packages, as installing a wheel does.

    With the editable install of a checkout, Python compiles each module at its first import and
    caches it; where ``PYTHONDONTWRITEBYTECODE`` is set (this project's CI machines) it cannot,
    and every start compiled all of parkwatch again: ~0.2 s of a ~0.9 s startup that no
    installed collector pays.
    """
    import compileall  # noqa: PLC0415

    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1)


Histogram = list[tuple[float, float]]
"""Cumulative ``(upper bound, count)`` buckets of a Prometheus histogram, ``+Inf`` last."""


class Scrape:
    """One ``/metrics`` reading: sample values summed over labels, and histograms by name."""

    def __init__(self, text: str) -> None:
        self.values: dict[str, float] = {}
        self.histograms: dict[str, Histogram] = {}
        for family in text_string_to_metric_families(text):
            buckets: dict[float, float] = {}
            for sample in family.samples:
                self.values[sample.name] = self.values.get(sample.name, 0.0) + sample.value
                if family.type == "histogram" and sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
            if buckets:
                self.histograms[family.name] = sorted(buckets.items())

    def value(self, name: str) -> float:
        """A sample's value (0.0 if the collector does not export it)."""
        return self.values.get(name, 0.0)


class CollectorProcess:
    """One ``python -m parkwatch run`` with its own identity, work dir and log file."""

    def __init__(
        self,
        workdir: Path,
        *,
        broker: Mosquitto,
        influx: InfluxDB1,
        database: str,
        topic_prefix: str,
        client_id: str,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.http_port = free_port()
        self.log_path = workdir / "collector.log"
        settings = {
            "PARKWATCH_MQTT__URL": broker.url,
            "PARKWATCH_MQTT__CLIENT_ID": client_id,
            "PARKWATCH_MQTT__TOPIC_PREFIX": topic_prefix,
            "PARKWATCH_INFLUX__URL": influx.url,
            "PARKWATCH_INFLUX__DATABASE": database,
            "PARKWATCH_HTTP__PORT": str(self.http_port),
            "PARKWATCH_SPOOL__DIRECTORY": str(workdir / "spool"),
            "PARKWATCH_DEADLETTER__PATH": str(workdir / "deadletter.jsonl"),
            "PARKWATCH_STATE__DIRECTORY": str(workdir / "state"),
            **(extra_env or {}),
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PARKWATCH_")}
        self.env = {**inherited, **settings}
        self.started_at = 0.0
        """``time.perf_counter()`` just before the process was started."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        assert self._process is not None, "collector not started"
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start ``parkwatch run`` (returns at once; see :meth:`healthy`)."""
        with self.log_path.open("ab") as log:
            self.started_at = time.perf_counter()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "parkwatch", "run"],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 (False while it cannot be reached); raise if dead."""
        self.check_alive()
        try:
            return self._get("/healthz")[0] == 200
        except OSError:
            return False

    def scrape(self) -> Scrape:
        """``GET /metrics``."""
        self.check_alive()
        return Scrape(self._get("/metrics")[1].decode())

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the log tail if the process has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"parkwatch run exited with {self._process.returncode}:\n{self.log_tail()}"
            )

    def cpu_s(self) -> float:
        """CPU seconds used so far."""
        return cpu_seconds(self.pid)

    def memory_mb(self) -> dict[str, float]:
        """``vmhwm`` and ``vmrss`` in MiB."""
        return memory_mb(self.pid)

    def stop(self) -> int | None:
        """SIGTERM (drain and exit); SIGKILL if it takes too long. Return the exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log_tail(self) -> str:
        """The last lines of the collector's log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def engines(self) -> str:
        """The engines the collector said it runs (its ``collector up`` log line), or unknown."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "unknown"
        found = ENGINES_LOGGED.search(text)
        return found.group(1) if found else "unknown"
