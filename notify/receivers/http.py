"""What the HTTP receivers share: one POST with the answer mapped onto the notify errors.

2xx is delivered; 408, 425, 429 and 5xx are :class:`NotifyUnavailable` (retried, ``Retry-After``
honoured); any other 4xx is :class:`NotifyRejected` (a bad body, credentials or URL: the same
request cannot succeed, so it is not retried). Connection errors and timeouts are retryable.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from parkwatch.errors import NotifyError, NotifyRejected, NotifyUnavailable
from parkwatch.httpheaders import retry_after_seconds

__all__ = ["error_for_status", "post", "retry_after_seconds"]

_RETRYABLE_4XX = frozenset({408, 425, 429})


def error_for_status(
    status: int, body: str, headers: Mapping[str, str], receiver: str
) -> NotifyError:
    """The error for a non-2xx answer."""
    message = f"{receiver}: HTTP {status}: {body[:300].strip()}"
    if status >= 500 or status in _RETRYABLE_4XX:
        return NotifyUnavailable(
            message, receiver=receiver, status=status, retry_after=retry_after_seconds(headers)
        )
    return NotifyRejected(message, receiver=receiver, status=status)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    receiver: str,
) -> None:
    """POST ``body``; return on 2xx, raise a NotifyError otherwise."""
    try:
        async with session.post(url, data=body, headers=dict(headers)) as response:
            if 200 <= response.status < 300:
                return
            text = await response.text(errors="replace")
            raise error_for_status(response.status, text, response.headers, receiver)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NotifyUnavailable(f"{receiver}: {exc!r}", receiver=receiver) from exc
