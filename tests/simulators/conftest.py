"""Fixtures for the simulator tests (brokers and topic prefixes come from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from parkwatch.localservers import Mosquitto
from simulators.simtime import SHANGHAI
from tests.simulators.subscriber import MqttSubscriber


@pytest.fixture(scope="session")
def start() -> datetime:
    """A Monday near the June solstice, midnight in Shanghai: a long, working day."""
    return datetime(2025, 6, 23, 0, 0, tzinfo=SHANGHAI)


@pytest.fixture
async def subscriber(mosquitto: Mosquitto, topic_prefix: str) -> AsyncIterator[MqttSubscriber]:
    """A client subscribed (QoS 1) to everything under the test's topic prefix."""
    async with MqttSubscriber.connect(mosquitto, topic_prefix) as sub:
        yield sub
