"""Retry-After as InfluxDB and the notification receivers send it: seconds or an HTTP date."""

from __future__ import annotations

import pytest

from parkwatch import httpheaders
from parkwatch.httpheaders import retry_after_seconds
from tests.helpers import FIXED_NOW, http_date


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeze the clock HTTP dates are compared with."""
    monkeypatch.setattr(httpheaders, "time", FIXED_NOW.timestamp)


@pytest.mark.usefixtures("fixed_clock")
def test_retry_after_as_an_http_date_is_the_seconds_until_then() -> None:
    assert http_date(90) == "Sat, 01 Mar 2025 12:01:30 GMT"
    assert retry_after_seconds({"Retry-After": http_date(90)}) == 90.0


@pytest.mark.usefixtures("fixed_clock")
def test_retry_after_as_an_http_date_in_the_past_is_zero() -> None:
    assert retry_after_seconds({"Retry-After": http_date(-30)}) == 0.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_in_seconds_or_missing_or_garbage(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds
