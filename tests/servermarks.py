"""Keeps the ``servers`` marker true: a pytest plugin, loaded by tests/conftest.py.

``pytest -m "not servers"`` must start no server process, and ``-m servers`` must select only tests
that need one. Three checks hold the marker to that, so a mis-marked test fails with a message
saying what to change:

* **At setup** (before any fixture runs): a test whose fixture closure holds a fixture of
  :data:`SERVER_FIXTURES` must be marked ``servers``. This catches an unmarked test that would
  reuse a session server another test already started.
* **At every process start** (a ``sys.audit`` hook on ``subprocess.Popen``, which also sees the
  Popen inside ``parkwatch.localservers`` and asyncio's subprocesses): starting a server program
  (:data:`SERVER_PROGRAMS`, or ``parkwatch demo``, which starts its own) from a test that is not
  marked fails that test *before* the process exists. A fixture that starts one must be listed in
  :data:`SERVER_FIXTURES`, so that the setup check knows it.
* **After the call**: a test marked ``servers`` that requests no server fixture and started no
  server is mis-marked (pure unit tests must run under ``-m "not servers"``).

tests/test_servermarks.py proves each check fails on a mis-marked test.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import pytest

__all__ = ["SERVER_FIXTURES", "SERVER_PROGRAMS", "MarkerError", "server_program"]

MARKER: Final = "servers"

SERVER_FIXTURES: Final = frozenset(
    {
        # tests/conftest.py: the servers shared by the session
        "mosquitto",
        "mosquitto_auth",
        "mosquitto_tls",
        "influxdb",
        "influxdb_auth",
        "victoria",
        "alertmanager",
        # tests/parkwatch/test_secrets_never_shown.py: a broker with passwords of its own
        "secret_broker",
        # tests/collector/adapters/test_influx_v1.py: an InfluxDB with tiny cardinality limits
        "limited_influx",
        # tests/collector/test_delivery_faults.py: servers a test stops and restarts
        "own_influx",
        "own_broker",
    }
)
"""Fixtures that start server processes (a test requesting one, even indirectly, needs them)."""

SERVER_PROGRAMS: Final = frozenset(
    {"mosquitto", "influxd", "victoria-metrics", "prometheus-alertmanager"}
)
"""Executables that are servers."""


class MarkerError(Exception):
    """A test's ``servers`` marker does not match what it does."""


def server_program(executable: object, args: object) -> str | None:
    """The server a ``subprocess.Popen(args, executable=...)`` would start, or None."""
    if isinstance(args, str | bytes):
        text = os.fsdecode(args)
        argv = shlex.split(text) if text.strip() else []
    elif isinstance(args, Iterable):
        argv = [os.fsdecode(a) if isinstance(a, str | bytes) else str(a) for a in args]
    else:
        argv = []
    program = os.fsdecode(executable) if isinstance(executable, str | bytes) else None
    program = program or (argv[0] if argv else "")
    name = os.path.basename(program)
    if name in SERVER_PROGRAMS:
        return name
    # parkwatch demo starts Mosquitto and InfluxDB itself (python -m parkwatch demo, or the script).
    words = argv[1:]
    if name == "parkwatch" and words[:1] == ["demo"]:
        return "parkwatch demo"
    if words[:3] == ["-m", "parkwatch", "demo"]:
        return "parkwatch demo"
    return None


@dataclass
class _Current:
    """The test being run and the fixtures being set up (innermost last)."""

    item: pytest.Item | None = None
    fixtures: list[str] = field(default_factory=list)


_CURRENT = _Current()
_STARTED = pytest.StashKey[list[str]]()


def _marked(item: pytest.Item) -> bool:
    return item.get_closest_marker(MARKER) is not None


def _server_fixtures(item: pytest.Item) -> list[str]:
    return sorted(set(getattr(item, "fixturenames", ())) & SERVER_FIXTURES)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Fail a server start from a test that is not marked, before the process exists."""
    if event != "subprocess.Popen":
        return
    item = _CURRENT.item
    if item is None:
        return
    program = server_program(args[0], args[1])
    if program is None:
        return
    if not _marked(item):
        raise MarkerError(
            f"{item.nodeid} starts {program} but is not marked @pytest.mark.{MARKER}: "
            f'`pytest -m "not {MARKER}"` would start a server; mark the test'
        )
    fixture = _CURRENT.fixtures[-1] if _CURRENT.fixtures else None
    if fixture is not None and fixture not in SERVER_FIXTURES:
        raise MarkerError(
            f"fixture {fixture!r} starts {program}: add it to SERVER_FIXTURES in "
            f"tests/servermarks.py, so that tests requesting it are checked before they run"
        )
    item.stash.setdefault(_STARTED, []).append(program)


_HOOKED: list[bool] = []


def pytest_configure(config: pytest.Config) -> None:
    """Install the audit hook (once per process: audit hooks cannot be removed)."""
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check the marker against the requested fixtures before any fixture runs."""
    _CURRENT.item = item
    needed = _server_fixtures(item)
    if needed and not _marked(item):
        pytest.fail(
            f"{item.nodeid} requests server fixture(s) {', '.join(needed)} but is not marked "
            f"@pytest.mark.{MARKER}",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After a passing call: a marked test must need a server."""
    _CURRENT.item = item
    result = yield
    if _marked(item) and not _server_fixtures(item) and not item.stash.get(_STARTED, []):
        raise MarkerError(
            f"{item.nodeid} is marked @pytest.mark.{MARKER} but requests no server fixture and "
            f"started no server: remove the marker (it must run under -m 'not {MARKER}')"
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """Teardown belongs to the test too; afterwards no test is running."""
    _CURRENT.item = item
    try:
        return (yield)
    finally:
        _CURRENT.item = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[Any, Any, Any]:
    """Track which fixture is being set up (its dependencies are set up before this runs)."""
    _CURRENT.fixtures.append(fixturedef.argname)
    try:
        return (yield)
    finally:
        _CURRENT.fixtures.pop()
