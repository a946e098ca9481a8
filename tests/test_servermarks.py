"""The ``servers`` marker check (tests/servermarks.py) fails every kind of mis-marked test.

One pytest run in a subprocess (the check's audit hook is per process) over a file of correctly
and wrongly marked tests. No real server runs in it: the checks stop the unmarked starts before
the process exists, the server fixture is a stand-in, and the one allowed "server program" is a
script named ``mosquitto`` that exits at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.servermarks import server_program

REPO = Path(__file__).resolve().parents[1]

CASES = '''
import subprocess
import sys
from pathlib import Path

import pytest

from parkwatch.localservers import Mosquitto

WORKDIR = Path(r"{workdir}")
FAKE_SERVER = r"{fake_server}"


@pytest.fixture
def mosquitto():
    """Stands for the session broker: a listed server fixture (starts nothing here)."""
    return None


@pytest.fixture
def unlisted_broker():
    """Starts a server, but is not in SERVER_FIXTURES."""
    with Mosquitto(WORKDIR / "unlisted") as broker:
        yield broker


def test_unmarked_requests_a_server_fixture(mosquitto):
    pass


def test_unmarked_starts_a_local_server():
    Mosquitto(WORKDIR / "blocked").start()


def test_unmarked_runs_the_demo():
    subprocess.run([sys.executable, "-m", "parkwatch", "demo", "--help"], check=True)


@pytest.mark.servers
def test_marked_needs_no_server():
    pass


@pytest.mark.servers
def test_marked_uses_an_unlisted_server_fixture(unlisted_broker):
    pass


@pytest.mark.servers
def test_marked_requests_a_server_fixture(mosquitto):
    pass


@pytest.mark.servers
def test_marked_starts_a_server_program():
    subprocess.run([FAKE_SERVER], check=True)


def test_unmarked_pure():
    pass


def test_unmarked_runs_a_process_that_is_no_server():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


def test_every_mis_marked_test_fails_and_no_server_starts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = pytester.path / "servers"
    fake_server = pytester.path / "bin" / "mosquitto"
    fake_server.parent.mkdir()
    fake_server.write_text("#!/bin/sh\nexit 0\n")
    fake_server.chmod(0o755)
    pytester.makepyfile(test_cases=CASES.format(workdir=workdir, fake_server=fake_server))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))

    result = pytester.runpytest_subprocess("-p", "tests.servermarks", "-p", "no:cacheprovider")

    outcomes = {
        "test_unmarked_requests_a_server_fixture": "ERROR",
        "test_unmarked_starts_a_local_server": "FAILED",
        "test_unmarked_runs_the_demo": "FAILED",
        "test_marked_needs_no_server": "FAILED",
        "test_marked_uses_an_unlisted_server_fixture": "ERROR",
        "test_marked_requests_a_server_fixture": "PASSED",
        "test_marked_starts_a_server_program": "PASSED",
        "test_unmarked_pure": "PASSED",
        "test_unmarked_runs_a_process_that_is_no_server": "PASSED",
    }
    result.assert_outcomes(passed=4, failed=3, errors=2)
    output = result.stdout.str()
    for name, outcome in outcomes.items():
        if outcome != "PASSED":
            assert f"{outcome} test_cases.py::{name}" in output, output
    result.stdout.fnmatch_lines_random(
        [
            "*test_unmarked_requests_a_server_fixture requests server fixture(s) mosquitto but "
            "is not marked @pytest.mark.servers*",
            "*test_unmarked_starts_a_local_server starts mosquitto but is not marked*",
            "*test_unmarked_runs_the_demo starts parkwatch demo but is not marked*",
            "*test_marked_needs_no_server is marked @pytest.mark.servers but requests no server "
            "fixture and started no server*",
            "*fixture 'unlisted_broker' starts mosquitto: add it to SERVER_FIXTURES*",
        ]
    )
    # The blocked starts never made a process: Mosquitto logs its start at once.
    for name in ("blocked", "unlisted"):
        log = workdir / name / "mosquitto.log"
        assert log.read_bytes() == b"", f"{log} shows a broker ran"


@pytest.mark.parametrize(
    ("executable", "args", "program"),
    [
        (None, ["mosquitto", "-c", "m.conf"], "mosquitto"),
        (None, ["/usr/sbin/mosquitto", "-c", "m.conf"], "mosquitto"),
        (None, "influxd -config x.conf", "influxd"),
        ("/usr/bin/victoria-metrics", ["vm", "-httpListenAddr=:1"], "victoria-metrics"),
        (None, [b"/usr/bin/influxd"], "influxd"),
        (None, ["/venv/bin/python", "-m", "parkwatch", "demo", "--plain"], "parkwatch demo"),
        (None, ["/venv/bin/parkwatch", "demo"], "parkwatch demo"),
        (None, ["/venv/bin/python", "-m", "parkwatch", "run"], None),
        (None, ["openssl", "req"], None),
        (None, ["mosquitto_passwd", "-U", "passwd"], None),
        (None, "", None),
    ],
)
def test_server_programs_are_recognised_by_their_command(
    executable: str | None, args: str | list[str] | list[bytes], program: str | None
) -> None:
    assert server_program(executable, args) == program
