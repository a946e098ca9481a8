"""Email through Apprise to a real SMTP server (aiosmtpd) that insists on TLS and a login:
STARTTLS on a plain port and TLS from the first byte, the certificate verified against the
test CA, subject and body checked in the message as received."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gc
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry

from notify.dispatcher import Dispatcher
from parkwatch.localservers import TlsFiles, free_port, make_tls_files
from tests.helpers import until
from tests.notify.helpers import (
    alert,
    mean_latency_ms,
    resolved,
    running,
    settings,
    transition,
)

# Chinese text uses full-width punctuation on purpose.
# ruff: noqa: RUF001

# aiosmtpd runs in this process: no server program, so these run under -m "not servers" too.
pytestmark = [
    # aiosmtpd warns about auth_require_tls=False, which the TLS-only server needs (see smtp).
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

USER, PASSWORD = "parkwatch@park.example", "smtp-pass/with:odd@chars"  # smtplib: ASCII only


@dataclass
class Mailbox:
    """What the SMTP server accepted, with the session facts that matter."""

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Keep the message."""
        assert isinstance(envelope.original_content, bytes)
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.recipients.append(list(envelope.rcpt_tos))
        # STARTTLS sets session.ssl; TLS from the start shows only on the transport.
        transport = server.transport
        wrapped = transport is not None and transport.get_extra_info("ssl_object") is not None
        self.tls.append(session.ssl is not None or wrapped)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept only USER/PASSWORD."""
        ok = isinstance(data, LoginPassword) and (_text(data.login), _text(data.password)) == (
            USER,
            PASSWORD,
        )
        if ok:
            self.logins.append(f"{mechanism}:{USER}")
        return AuthResult(success=ok, handled=False)


class _Session(SMTP):
    """aiosmtpd's session, remembering its transports so the server can close them."""

    def __init__(self, transports: set[asyncio.BaseTransport], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        super().connection_made(transport)


class _Controller(Controller):
    """aiosmtpd's controller, closing the sessions still open when it stops.

    Its own ``stop`` closes the event loop with them open (a TLS session waits up to 30 s for
    the client's close_notify, which smtplib never sends), and their sockets were then
    reported unclosed in whichever later test the garbage collector happened to run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transports: set[asyncio.BaseTransport] = set()

    def factory(self) -> SMTP:
        return _Session(self.transports, self.handler, **self.SMTP_kwargs)

    def stop(self, no_assert: bool = False) -> None:
        async def close_sessions() -> None:
            for transport in self.transports:
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
            await asyncio.sleep(0)  # abort closes the socket on the next turn of the loop

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close_sessions(), self.loop).result(timeout=5)
        super().stop(no_assert)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1."""
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def trust_test_ca(monkeypatch: pytest.MonkeyPatch, tls_files: TlsFiles) -> None:
    """Make the default SSL context (which Apprise's email plugin uses) trust the test CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca_file))


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """The SMTP server's TLS context."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


@pytest.fixture(params=["starttls", "ssl"])
def smtp(request: pytest.FixtureRequest, tls_files: TlsFiles) -> Iterator[tuple[str, int, Mailbox]]:
    """An SMTP server requiring a login over TLS: STARTTLS, or TLS from the start ("ssl")."""
    mailbox = Mailbox()
    mode: str = request.param
    tls = server_context(tls_files)
    common: dict[str, Any] = {
        "authenticator": mailbox.authenticate,
        "auth_required": True,
        "auth_require_tls": True,
    }
    if mode == "starttls":
        controller = _Controller(
            mailbox,
            hostname="127.0.0.1",
            port=free_port(),
            tls_context=tls,
            require_starttls=True,
            **common,
        )
    else:
        # aiosmtpd 1.4 does not see TLS set up by its listening socket and would hide AUTH
        # behind a TLS requirement; the socket is TLS-only, so the requirement holds anyway.
        common["auth_require_tls"] = False
        controller = _Controller(
            mailbox, hostname="127.0.0.1", port=free_port(), ssl_context=tls, **common
        )
    controller.start()
    yield mode, controller.port, mailbox
    controller.stop()
    gc.collect()  # a socket it left open is reported here, not in some later test


def mail_url(mode: str, port: int) -> str:
    """The Apprise URL users would write for this server."""
    user, password = quote(USER, safe=""), quote(PASSWORD, safe="")
    return (
        f"mailtos://{user}:{password}@park.example:{port}?smtp=127.0.0.1&mode={mode}"
        "&from=parkwatch%40park.example&to=ops%40park.example"
    )


@pytest.mark.usefixtures("trust_test_ca")
async def test_the_email_arrives_over_tls_after_login(
    smtp: tuple[str, int, Mailbox],
    registry: CollectorRegistry,
    record_property: Callable[[str, object], None],
) -> None:
    mode, port, mailbox = smtp
    receivers = {"mail": {"type": "apprise", "url": mail_url(mode, port)}}
    firing = alert(device="bess-1")
    dispatcher = Dispatcher(settings(receivers, grafana_url="http://grafana.park:3000"), registry)
    async with running(dispatcher):
        dispatcher.submit(transition(firing))
        dispatcher.submit(transition(alert(device="bess-2")))
        await until(lambda: len(mailbox.messages) == 1, what="the firing email")
        dispatcher.submit(transition(resolved(firing)))
        await until(lambda: len(mailbox.messages) == 2, what="the resolved email")
    assert mailbox.tls == [True, True]
    assert mailbox.logins
    assert mailbox.recipients[0] == ["ops@park.example"]
    message = mailbox.messages[0]
    assert message["Subject"] == "【告警 2】StorageCellHot · caohejing"
    assert "parkwatch@park.example" in message["From"]
    # Markdown became HTML (Apprise converts for email).
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    text = html.get_content()
    assert "<strong>告警中（2 条）</strong>" in text
    assert "<strong>严重</strong> StorageCellHot · caohejing 储能 bess-1" in text
    assert 'href="http://grafana.park:3000/d/parkwatch-park?var-park=caohejing' in text
    assert mailbox.messages[1]["Subject"] == "【已恢复】StorageCellHot · caohejing"
    record_property(
        f"email_{mode}_latency_firing_to_delivered_ms", mean_latency_ms(registry, "mail")
    )


@pytest.mark.usefixtures("trust_test_ca")
async def test_a_wrong_password_fails_and_is_retried(
    smtp: tuple[str, int, Mailbox], registry: CollectorRegistry
) -> None:
    mode, port, mailbox = smtp
    url = mail_url(mode, port).replace(quote(PASSWORD, safe=""), "wrong")
    receivers = {"mail": {"type": "apprise", "url": url, "retry_deadline_s": 0.5}}
    async with running(Dispatcher(settings(receivers), registry)) as dispatcher:
        dispatcher.submit(transition(alert()))
        failed = ("parkwatch_notifications_total", {"receiver": "mail", "outcome": "failed"})
        await until(lambda: registry.get_sample_value(*failed) == 1, what="given up")
    assert not mailbox.messages
    retries = registry.get_sample_value(
        "parkwatch_notification_retries_total", {"receiver": "mail"}
    )
    assert retries is not None
    assert retries >= 1  # Apprise cannot say why it failed, so parkwatch retries
