"""Fixtures of the notification tests: a fresh metrics registry and a recording HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from tests.notify.helpers import RecordingServer


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of this test's own, so metrics start at zero."""
    return CollectorRegistry(auto_describe=True)


@pytest.fixture
async def http_receiver() -> AsyncIterator[RecordingServer]:
    """A local HTTP server that records what it receives."""
    server = RecordingServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http_receiver_2() -> AsyncIterator[RecordingServer]:
    """A second, independent recording server."""
    server = RecordingServer()
    await server.start()
    yield server
    await server.stop()
