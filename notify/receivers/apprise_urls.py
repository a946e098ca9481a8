"""Apprise receiver: WeCom, DingTalk, Feishu/Lark, email, Slack, Telegram, MQTT and 100+ more.

Apprise (https://github.com/caronc/apprise) speaks each service's protocol; users paste its
URL (``wecombot://KEY``, ``dingtalk://SECRET@TOKEN``, ``feishu://TOKEN``, ``mailtos://...``).
parkwatch only renders the message: markdown where the service renders markdown or HTML
(Apprise converts markdown to HTML for email), plain text elsewhere.

Apprise is synchronous (requests, smtplib, paho threads). Each receiver has one worker thread of
its own, so a slow service never occupies the event loop or another receiver's thread, and at
most one attempt runs at a time: while an attempt that outlived its timeout still holds the
thread, the next attempt waits for it rather than queueing more work behind it. Apprise's own
socket timeouts (4 s connect and read by default, URL options ``cto``/``rto``; 15 s connect
for email) end a hung request eventually.

Apprise reports only success or failure, not why: a failed delivery is treated as retryable.
A URL Apprise cannot parse is a configuration error at start.

One correction to Apprise (2.3.0): its DingTalk plugin URL-encodes the signature and then hands
it to requests, which encodes it again (``%2B`` becomes ``%252B``); DingTalk decodes once and
answers "sign not match" (errcode 310000) for every signed message, since a base64 HMAC-SHA256
always ends in ``=``. :func:`_sign_once` undoes the first encoding; it changes nothing once
Apprise stops encoding (base64 has no ``%``). tests/notify/receivers/test_apprise_robots.py
checks the signature against DingTalk's documented algorithm.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from urllib.parse import unquote

import apprise
from apprise.plugins.dingtalk import NotifyDingTalk

from notify.model import Notification
from notify.render import Message, Renderer
from parkwatch.errors import ConfigError, NotifyUnavailable
from parkwatch.settings import AppriseReceiverSettings

__all__ = ["AppriseNotifier"]

log = logging.getLogger(__name__)

_RICH_FORMATS = frozenset({apprise.NotifyFormat.MARKDOWN, apprise.NotifyFormat.HTML})


class AppriseNotifier:
    """Sends through one Apprise URL on a worker thread of its own."""

    grouped = True

    def __init__(self, name: str, settings: AppriseReceiverSettings, renderer: Renderer) -> None:
        self.name = name
        self._settings = settings
        self._renderer = renderer
        # Sequential dispatch: the call runs in our worker thread, not in Apprise's pool.
        asset = apprise.AppriseAsset(async_mode=False)
        self._apprise = apprise.Apprise(asset=asset)
        service = apprise.Apprise.instantiate(settings.url.get_secret_value(), asset=asset)
        if service is None:
            raise ConfigError(
                f"notify.receivers.{name}.url: not an Apprise URL Apprise understands "
                "(see https://github.com/caronc/apprise/wiki)"
            )
        # Apprise spaces two sends to one service 5.5 s apart (its own fixed throttle, which
        # would hold our worker thread); the receiver's rate_limit_per_minute paces instead.
        service.request_rate_per_sec = 0
        if isinstance(service, NotifyDingTalk) and service.secret:
            service.get_signature = _sign_once(service.get_signature)  # type: ignore[method-assign]
        self._apprise.add(service)
        self.service_name = str(service.service_name)
        self.markdown = _wants_markdown(settings.format, service.notify_format)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"apprise-{name}"
        )
        self._running: tuple[Notification, concurrent.futures.Future[bool]] | None = None

    async def send(self, notification: Notification) -> None:
        """Render and send; raise NotifyUnavailable when Apprise reports a failure."""
        if self._running is not None:
            # An earlier attempt may have outlived its timeout: wait for it if it still holds
            # the thread (this attempt's timeout bounds the wait). If it was this very message
            # and it got through after all (also while we slept between attempts), sending
            # again would only duplicate it.
            earlier, future = self._running
            if future.done():
                delivered = not future.cancelled() and future.exception() is None
                delivered = delivered and bool(future.result())
            else:
                delivered = await asyncio.wrap_future(future)
            if delivered and earlier is notification:
                return
        message = self._renderer.render(
            notification, self._settings.language, markdown=self.markdown
        )
        future = self._executor.submit(self._send_blocking, message, _notify_type(notification))
        self._running = (notification, future)
        if not await asyncio.wrap_future(future):
            raise NotifyUnavailable(
                f"{self.name}: {self.service_name} did not accept the message "
                "(the apprise log says why)",
                receiver=self.name,
            )

    def _send_blocking(self, message: Message, notify_type: apprise.NotifyType) -> bool:
        body_format = (
            apprise.NotifyFormat.MARKDOWN if message.markdown else apprise.NotifyFormat.TEXT
        )
        result = self._apprise.notify(
            body=message.body,
            title=message.title,
            notify_type=notify_type,
            body_format=body_format,
        )
        return bool(result)

    async def close(self) -> None:
        """Stop the worker thread (a hung attempt is left to its socket timeout)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        # Apprise's MQTT plugin keeps a paho network thread; clearing drops and closes it.
        self._apprise.clear()


def _sign_once(get_signature: Callable[[], tuple[str, str]]) -> Callable[[], tuple[str, str]]:
    """DingTalk's (timestamp, sign) with the sign not yet URL-encoded (requests encodes it)."""

    def signature() -> tuple[str, str]:
        timestamp, sign = get_signature()
        return timestamp, unquote(sign)

    return signature


def _wants_markdown(choice: str, formats: object) -> bool:
    if choice != "auto":
        return choice == "markdown"
    offered = set(formats) if isinstance(formats, tuple | list | set) else {formats}
    return bool(offered & _RICH_FORMATS)


def _notify_type(notification: Notification) -> apprise.NotifyType:
    """Colour and icon where the service shows them: red firing, green resolved."""
    if notification.kind == "test":
        return apprise.NotifyType.INFO
    if not notification.firing:
        return apprise.NotifyType.SUCCESS
    severities = {a.labels.get("severity") for a in notification.firing}
    return apprise.NotifyType.FAILURE if "critical" in severities else apprise.NotifyType.WARNING
