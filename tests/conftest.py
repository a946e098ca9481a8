"""Shared fixtures: real servers started once per session, and per-test names that isolate data.

Server fixtures start lazily, so a run that needs no server starts none; a test that needs one is
marked ``servers`` (tests/servermarks.py checks that, so ``-m "not servers"`` starts no server).
Each test gets its own
MQTT topic prefix and InfluxDB database, derived from its name, so tests never see each other's
data on the shared servers.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from parkwatch.localservers import (
    Alertmanager,
    InfluxDB1,
    Mosquitto,
    VictoriaMetrics,
    make_tls_files,
)
from tests.mounts import MountUnavailable, tmpfs

# The check that keeps the ``servers`` marker true (see its docstring); pytester tests it.
pytest_plugins = ("tests.servermarks", "pytester")

MQTT_USERNAME = "parkwatch"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into the Ctrl-C path, which tears fixtures down and runs atexit hooks."""
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """Make SIGTERM (``timeout``, CI cancellation) stop the servers instead of orphaning them."""
    # By default SIGTERM ends Python at once, skipping teardown and atexit; the servers run in
    # their own session, so the signal does not reach them and they would keep running.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _slug(text: str, *, limit: int = 40) -> str:
    """Reduce a test name to characters safe in topics and database names."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:limit]


def _digest(request: pytest.FixtureRequest) -> str:
    """A short stable hash of the test id: separates same-named tests in different modules."""
    return hashlib.sha1(request.node.nodeid.encode(), usedforsecurity=False).hexdigest()[:6]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """An anonymous broker shared by the session."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture(scope="session")
def mosquitto_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker that requires a password; ``.username``/``.password`` hold the valid pair."""
    users = {MQTT_USERNAME: secrets.token_urlsafe(16)}
    with Mosquitto(tmp_path_factory.mktemp("mosquitto_auth"), users=users) as broker:
        yield broker


@pytest.fixture(scope="session")
def mosquitto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A TLS-only broker; ``.tls`` holds the CA, cert and key files (connect to 127.0.0.1)."""
    workdir = tmp_path_factory.mktemp("mosquitto_tls")
    tls = make_tls_files(workdir / "tls")
    with Mosquitto(workdir, tls=tls) as broker:
        yield broker


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """An InfluxDB 1.x server shared by the session; use ``influx_database`` for a database."""
    with InfluxDB1(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


INFLUX_ADMIN = "admin"


@pytest.fixture(scope="session")
def influxdb_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """An InfluxDB 1.x with authentication on; ``.admin`` holds the valid user and password.

    The password holds every character a URL must percent-encode in its user info.
    """
    admin = (INFLUX_ADMIN, f"p@ss/w#rd?:{secrets.token_urlsafe(8)}")
    with InfluxDB1(tmp_path_factory.mktemp("influxdb_auth"), admin=admin) as server:
        yield server


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics server shared by the session; isolate tests by measurement or tag."""
    with VictoriaMetrics(tmp_path_factory.mktemp("victoria")) as server:
        yield server


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A Prometheus Alertmanager shared by the session; isolate tests by a label value."""
    with Alertmanager(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test, e.g. ``t-test_foo-3f2a9c`` (no ``/``, ``+``, ``#``)."""
    return f"t-{_slug(request.node.name)}-{_digest(request)}"


@pytest.fixture
def influx_database(request: pytest.FixtureRequest, influxdb: InfluxDB1) -> Iterator[str]:
    """A fresh database on the session InfluxDB, named after this test; dropped afterwards."""
    name = f"t_{_slug(request.node.name)}_{_digest(request)}"
    influxdb.create_database(name)
    yield name
    influxdb.drop_database(name)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only tmpfs (root ignores chmod); skipped where mounts are denied."""
    try:
        with tmpfs(tmp_path / "read-only") as mount:
            mount.read_only()
            yield mount.path
    except MountUnavailable as exc:
        pytest.skip(f"needs a read-only mount: {exc}")


# ---------------------------------------------------------------------------------------------
# Addition for tests/collector/test_delivery_faults.py: print the counts each fault test
# recorded (record_property), so a run shows what was published, accepted, spooled, replayed...
# ---------------------------------------------------------------------------------------------

FAULT_TESTS = ("test_delivery_faults.py", "test_deadletter_faults.py")
# Notification tests record their firing -> delivered latency per receiver the same way.
REPORTED_TESTS = (*FAULT_TESTS, "tests/notify/")


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """List the user properties of the delivery fault and notification tests that ran."""
    latest: dict[str, list[tuple[str, object]]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid: str = getattr(report, "nodeid", "") or ""
            properties = getattr(report, "user_properties", None)
            # The teardown report carries every property, also those recorded at teardown.
            if (
                any(part in nodeid for part in REPORTED_TESTS)
                and properties
                and len(properties) > len(latest.get(nodeid, []))
            ):
                latest[nodeid] = list(properties)
    if not latest:
        return
    terminalreporter.section("delivery fault counts and notification latencies")
    for nodeid, properties in sorted(latest.items()):
        terminalreporter.write_line(nodeid.rsplit("::", 1)[-1])
        for key, value in properties:
            terminalreporter.write_line(f"    {key}: {value}")
