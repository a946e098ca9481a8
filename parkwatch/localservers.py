"""Real Mosquitto, InfluxDB 1.x, VictoriaMetrics and Alertmanager servers as child processes, for
tests and demos.

Each server runs on a free loopback port with its config, data and log in one work directory.
The API is synchronous (``subprocess.Popen`` and ``urllib``) so pytest session fixtures and a CLI
demo can use it without an event loop. Children get their own session, so a Ctrl-C in a terminal
reaches only Python, which then stops them in order; an ``atexit`` hook stops any left running.
A parent killed by a signal Python does not handle (SIGTERM by default) orphans its servers;
tests/conftest.py turns SIGTERM into the Ctrl-C path for that reason.

Facts verified against the Debian packages (Mosquitto 2.0.11, InfluxDB 1.6.7, VictoriaMetrics
1.79.5) that tests and the lead's contract tests rely on:

* Mosquitto run as root switches to the ``mosquitto`` user unless the config says ``user root``;
  it still starts, but cannot write its persistence db into a root-owned temp dir and reports
  that only at shutdown ("Error saving in-memory database ... Permission denied"). We therefore
  write ``user root`` when running as root. It saves the db on SIGTERM; after SIGKILL only the
  last autosave survives. Unknown config options are fatal at start, so a clean start proves
  that every option name exists.
* VictoriaMetrics ``POST /api/v2/write?bucket=B&org=O&precision=ms`` answers 204 and names each
  series ``<measurement>_<field>`` (also for a single field); tags become labels; ``bucket`` and
  ``org`` are ignored and do NOT become labels. (The v1 ``/write?db=D`` endpoint, by contrast,
  adds a ``db="D"`` label.) Integer fields are stored as floats, booleans as 1/0, and string
  fields as 0 (their text is lost). gzip bodies and an ``Authorization: Token`` header are
  accepted.
* VictoriaMetrics rejects nothing loudly: an unparsable line and a timestamp 5 days in the
  future (the limit is 2) both got 204; the line is only logged or counted
  (``vm_rows_ignored_total{reason="big_timestamp"}``). Contract tests must read the data back.
* Samples older than ``-retentionPeriod`` (default one month) are dropped, hence ``100y``
  (2000-01-01 and 2023 were accepted). ``-search.latencyOffset`` (default 30 s) hides recent
  points from ``/api/v1/query*`` only; ``/api/v1/export`` returns raw samples, so it is not set.
* Written data is invisible to ``/api/v1/export`` until ``/internal/force_flush``; after it,
  samples older than the current hour are visible at once, but samples in the current hour only
  after about one second more (the per-hour index is updated in the background). Poll with
  :func:`wait_for` instead of assuming visibility.
* Without deduplication VictoriaMetrics keeps both samples of a series written twice with the
  same timestamp (InfluxDB overwrites). We start it with ``-dedup.minScrapeInterval=1ms`` so a
  retried batch collapses to one sample, as in InfluxDB; ``dedup=False`` turns this off.
* The match ``{__name__=~".+"}`` exports nothing on 1.79.5; use ``{__name__!=""}`` for "all".
* Alertmanager 0.25 (Debian's ``prometheus-alertmanager``): ``--cluster.listen-address=`` (empty)
  turns the HA gossip off, otherwise it binds 0.0.0.0:9094. ``POST /api/v2/alerts`` answers 200
  with an empty body, or 400 with a quoted message (e.g. "start time must be before end time",
  when endsAt < startsAt); ``GET /api/v2/alerts`` lists only alerts whose endsAt is still ahead.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from parkwatch.errors import ServerError

__all__ = [
    "NO_LOSS_SETTINGS",
    "Alertmanager",
    "InfluxDB1",
    "LocalServer",
    "Mosquitto",
    "TlsFiles",
    "VictoriaMetrics",
    "free_port",
    "make_tls_files",
    "wait_for",
]

# Timing constants live here so tests can shorten them.
POLL_INTERVAL = 0.05  # seconds between readiness probes
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40

# The [no-loss] settings of config/mosquitto.conf; a test keeps the two files in step.
NO_LOSS_SETTINGS: Mapping[str, str] = {
    "autosave_interval": "60",
    "autosave_on_changes": "false",
    "max_queued_messages": "1000000",
    "max_queued_bytes": "536870912",
    "queue_qos0_messages": "false",
    "message_size_limit": "1048576",
    "max_inflight_messages": "10000",
    "set_tcp_nodelay": "true",
}

_T = TypeVar("_T")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], _T | None], *, timeout: float, what: str, interval: float = POLL_INTERVAL
) -> _T:
    """Call ``probe`` until it returns something truthy and return that; TimeoutError otherwise.

    The one synchronous poller of the project (server readiness here; the test suite's process
    and fault tests build on it). The error names ``what`` and the last result. An exception
    from ``probe`` ends the wait at once: a probe that should tolerate errors catches them.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:g}s waiting for {what}; last result: {result!r}"
            )
        time.sleep(interval)


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """Send one request and return (status, body); HTTP errors are returned, not raised."""
    # S310 (file:/custom schemes): every URL here is built by this module from http://127.0.0.1.
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _run_tool(command: Sequence[str | Path], what: str) -> None:
    """Run a helper CLI (openssl, mosquitto_passwd); raise ServerError with its stderr."""
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except OSError as exc:
        raise ServerError(f"{what}: cannot run {command[0]}: {exc}") from exc
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        raise ServerError(f"{what}: {command[0]} exited with {result.returncode}: {stderr}")


def _http_answers(url: str, status: int) -> bool:
    """Return whether GET url answers with status; readiness probes treat any failure as no."""
    try:
        return _http("GET", url)[0] == status
    except (OSError, http.client.HTTPException):
        return False


def _tcp_accepts(host: str, port: int) -> bool:
    """Return whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


_LIVE: set[LocalServer] = set()


@atexit.register
def _stop_all() -> None:
    """Stop servers a caller forgot, so no child outlives the Python process."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)


class LocalServer:
    """One server child process with a work dir, a fixed port and a readiness probe."""

    name: ClassVar[str] = "server"
    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        # Absolute: the server runs with its work dir as cwd, and its config names files in it.
        self.workdir = Path(workdir).resolve()
        self.port = port if port is not None else free_port()
        self.log_path = self.workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port}, workdir={str(self.workdir)!r})"

    # Subclasses fill in these three.
    def _prepare(self) -> None:
        """Write config files into the work dir; called before every start."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (to signal it, or read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until it answers; raise ServerError with its log if not."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        command = self._command()
        # Append, so a restart keeps the earlier log for post-mortems.
        with self.log_path.open("ab") as log:
            try:
                process = subprocess.Popen(
                    command,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C must not hit the child before we stop it
                )
            except OSError as exc:
                raise ServerError(f"cannot run {command[0]} for {self!r}: {exc}") from exc
        self._process = process
        _LIVE.add(self)

        def ready() -> bool:
            code = process.poll()
            if code is not None:
                raise ServerError(f"{self!r} exited with code {code}; log:\n{self.log_tail()}")
            return self._ready()

        try:
            wait_for(ready, timeout=timeout, what=f"{self!r} to answer")
        except TimeoutError:
            self.kill()
            raise ServerError(
                f"{self!r} not ready after {timeout:g}s; log:\n{self.log_tail()}"
            ) from None
        except ServerError:
            self.kill()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gracefully (SIGTERM, so servers save their state); SIGKILL after ``timeout``."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """Kill with SIGKILL, as a crash would: no state is saved."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._process = None
        _LIVE.discard(self)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same port with the same data dir."""
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA and a server cert for 127.0.0.1/localhost with the ``openssl`` CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    # The extensions Python's strict verification (VERIFY_X509_STRICT, default from 3.13) wants.
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands: list[list[str | Path]] = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "3650",
         "-subj", "/CN=parkwatch test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825",
         "-extfile", ext, "-out", crt],
    ]  # fmt: skip
    for command in commands:
        _run_tool(command, f"making TLS files in {directory}")
    return TlsFiles(ca_file=ca_crt, cert_file=crt, key_file=key)


class Mosquitto(LocalServer):
    """A Mosquitto 2.0 broker with the no-loss settings of config/mosquitto.conf."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        persistence: bool = True,
        extra_conf: str = "",
    ) -> None:
        super().__init__(workdir, port=port)
        self.users = dict(users or {})
        self.tls = tls
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.config_path = self.workdir / "mosquitto.conf"
        # Credentials of the first user, so one code path serves anonymous and secured brokers.
        first = next(iter(self.users.items()), None)
        self.username: str | None = first[0] if first else None
        self.password: str | None = first[1] if first else None

    @property
    def url(self) -> str:
        """``mqtt://`` or ``mqtts://`` URL of the listener."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    def config_text(self) -> str:
        """The broker config this instance runs with."""
        lines = [f"listener {self.port} {self.host}"]
        if os.geteuid() == 0:
            # Otherwise mosquitto switches to its own user and cannot save the persistence db.
            lines.append("user root")
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self.workdir / 'passwd'}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        lines += [f"{key} {value}" for key, value in NO_LOSS_SETTINGS.items()]
        # stderr, not stdout: C buffers stdout in a file, and the tail must be current on errors.
        # Not "log_type all": debug logs every packet and would swamp the log tail.
        log_types = ("error", "warning", "notice", "information")
        lines += ["log_dest stderr", *(f"log_type {t}" for t in log_types)]
        lines.append("log_timestamp_format %Y-%m-%dT%H:%M:%S")
        return "\n".join(lines) + "\n" + self.extra_conf + "\n"

    def _prepare(self) -> None:
        if self.users:
            # Hash a plain-text file in place with -U: no password appears in a process list.
            passwd = self.workdir / "passwd"
            passwd.write_text("".join(f"{user}:{pw}\n" for user, pw in self.users.items()))
            passwd.chmod(0o600)
            _run_tool(["mosquitto_passwd", "-U", passwd], f"password file for {self!r}")
        self.config_path.write_text(self.config_text())

    def _command(self) -> list[str]:
        return ["mosquitto", "-c", str(self.config_path)]

    def _ready(self) -> bool:
        return _tcp_accepts(self.host, self.port)


class InfluxDB1(LocalServer):
    """An InfluxDB 1.x server with helpers that speak its HTTP API.

    With ``admin=(user, password)`` authentication is on: that admin user is created at the
    first start (InfluxDB lets the first admin be created without credentials) and the helpers
    send its credentials.
    """

    name = "influxd"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        admin: tuple[str, str] | None = None,
        data_options: Mapping[str, int | str] | None = None,
    ) -> None:
        super().__init__(workdir, port=port)
        self.rpc_port = free_port()  # backup/restore RPC; would default to the shared :8088
        self.config_path = self.workdir / "influxdb.conf"
        self.admin = admin
        self.data_options = dict(data_options or {})
        """Extra ``[data]`` settings, e.g. ``{"max-values-per-tag": 50}`` to reach a limit."""

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start, and create the admin user when authentication is on."""
        super().start(timeout)
        if self.admin is not None:
            user, password = self.admin
            quoted = password.replace("\\", "\\\\").replace("'", "\\'")
            self._request(
                "POST",
                {"q": f"CREATE USER {_ident(user)} WITH PASSWORD '{quoted}' WITH ALL PRIVILEGES"},
                f"create admin user on {self!r}",
            )

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> None:
        meta, data, wal = (self.workdir / name for name in ("meta", "data", "wal"))
        extra = "".join(
            f"  {key} = {_toml_value(value)}\n" for key, value in self.data_options.items()
        )
        # Services not listed (graphite, collectd, opentsdb, udp) are disabled by default.
        self.config_path.write_text(f"""\
reporting-enabled = false
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{meta}"
  logging-enabled = false

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
{extra}
[monitor]
  store-enabled = false

[http]
  bind-address = "{self.host}:{self.port}"
  auth-enabled = {"true" if self.admin else "false"}
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
""")

    def _command(self) -> list[str]:
        return ["influxd", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        return _http_answers(f"{self.url}/ping", 204)

    def _with_auth(self, params: Mapping[str, str]) -> str:
        """A query string with the admin's credentials added when authentication is on."""
        auth = {"u": self.admin[0], "p": self.admin[1]} if self.admin else {}
        return urllib.parse.urlencode({**params, **auth})

    def _request(self, method: str, params: Mapping[str, str], what: str) -> list[Any]:
        status, body = _http(method, f"{self.url}/query?{self._with_auth(params)}")
        try:
            results: list[Any] = json.loads(body)["results"]
        except (ValueError, KeyError) as exc:
            raise ServerError(f"{what}: HTTP {status}: {body[:500]!r}") from exc
        errors = [r["error"] for r in results if "error" in r]
        if status != 200 or errors:
            raise ServerError(f"{what}: HTTP {status}: {errors}")
        return results

    def create_database(self, name: str) -> None:
        """Create a database (no error if it exists)."""
        self._request("POST", {"q": f"CREATE DATABASE {_ident(name)}"}, f"create {name}")

    def drop_database(self, name: str) -> None:
        """Drop a database (no error if it does not exist)."""
        self._request("POST", {"q": f"DROP DATABASE {_ident(name)}"}, f"drop {name}")

    def write(self, database: str, lines: str, *, precision: str = "ms") -> None:
        """Write line protocol via ``/write``; raise ServerError unless it answers 204."""
        query = self._with_auth({"db": database, "precision": precision})
        status, body = _http("POST", f"{self.url}/write?{query}", lines.encode())
        if status != 204:
            raise ServerError(f"write to {database}: HTTP {status}: {body[:500]!r}")

    def query(self, database: str, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the rows of all series, each with the series' tags merged in."""
        params = {"db": database, "q": influxql, "epoch": "ms"}
        rows: list[dict[str, Any]] = []
        for result in self._request("GET", params, f"query {database}"):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                rows += [{**dict(zip(series["columns"], values, strict=True)), **tags}
                         for values in series.get("values", [])]  # fmt: skip
        return rows


def _toml_value(value: int | str) -> str:
    """An influxdb.conf (TOML) value: integers bare, strings quoted."""
    return str(value) if isinstance(value, int) else json.dumps(value)


def _ident(name: str) -> str:
    """Quote an InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class VictoriaMetrics(LocalServer):
    """A single-node VictoriaMetrics that accepts old timestamps (see the module docstring)."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path, *, port: int | None = None, dedup: bool = True) -> None:
        super().__init__(workdir, port=port)
        self.dedup = dedup

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        command = [
            "victoria-metrics",
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",  # samples older than the retention are dropped silently
            "-loggerLevel=WARN",
        ]
        if self.dedup:
            command.append("-dedup.minScrapeInterval=1ms")
        return command

    def _ready(self) -> bool:
        return _http_answers(f"{self.url}/health", 200)

    def write(self, lines: str, *, bucket: str = "parkwatch", org: str = "parkwatch") -> None:
        """Write line protocol with ms timestamps via the InfluxDB v2 endpoint."""
        query = urllib.parse.urlencode({"bucket": bucket, "org": org, "precision": "ms"})
        status, body = _http("POST", f"{self.url}/api/v2/write?{query}", lines.encode())
        if status != 204:
            raise ServerError(f"write to {self!r}: HTTP {status}: {body[:500]!r}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Flush, then return the series matching a selector as ``/api/v1/export`` lines."""
        status, body = _http("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            raise ServerError(f"force_flush on {self!r}: HTTP {status}: {body[:500]!r}")
        query = urllib.parse.urlencode({"match[]": match})
        status, body = _http("GET", f"{self.url}/api/v1/export?{query}")
        if status != 200:
            raise ServerError(f"export {match!r}: HTTP {status}: {body[:500]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


class Alertmanager(LocalServer):
    """A Prometheus Alertmanager without clustering; every alert goes to a receiver that does
    nothing, so tests read alerts back through its API."""

    name = "alertmanager"

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> None:
        (self.workdir / "alertmanager.yml").write_text(
            'route:\n  receiver: "null"\n  group_wait: 1s\nreceivers:\n  - name: "null"\n'
        )

    def _command(self) -> list[str]:
        return [
            "prometheus-alertmanager",
            f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--cluster.listen-address=",  # no HA gossip (it would bind 0.0.0.0:9094)
            "--log.level=warn",
        ]

    def _ready(self) -> bool:
        return _http_answers(f"{self.url}/-/ready", 200)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active, not yet ended alerts), with optional label filters."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in filters.items()])
        status, body = _http("GET", f"{self.url}/api/v2/alerts?{query}")
        if status != 200:
            raise ServerError(f"alerts from {self!r}: HTTP {status}: {body[:500]!r}")
        alerts: list[dict[str, Any]] = json.loads(body)
        return alerts
