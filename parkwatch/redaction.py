"""How URLs and secrets are shown: the one place that hides a password in a URL.

Every place that shows a URL (logs, ``/healthz``, sink names in errors, ``parkwatch config show``,
the demo) calls :func:`redact_url`. It never raises and never needs the URL to parse: a password
holding ``/``, ``?``, ``#`` or ``@`` (which a URL should percent-encode, but people paste anyway)
is still found and hidden, because the user info is taken to reach the last ``@`` whenever one
follows the authority. The settings use :func:`split_user_info` the same way to move a password
out of a URL into a ``SecretStr`` and to refuse a URL whose user info cannot be read unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

__all__ = ["UrlUserInfo", "redact_url", "split_user_info"]


URL_PASSWORD_MASK: Final = "***"  # noqa: S105 - the mask, not a password

# Query parameters that carry credentials in URLs people configure (InfluxDB 1.x reads u/p).
_SECRET_QUERY_KEYS: Final = frozenset(
    {"p", "password", "pass", "pwd", "token", "secret", "access_token", "api_key", "apikey", "key"}
)


@dataclass(frozen=True, slots=True)
class UrlUserInfo:
    """A URL cut at its user info: ``{scheme}://{user}:{password}@{rest}``, raw (not decoded)."""

    scheme: str
    user: str | None
    password: str | None
    rest: str
    """Host, port, path, query and fragment, as given."""
    ambiguous: bool
    """The user info holds ``/``, ``?`` or ``#``, so strict URL parsers read it differently."""

    def without_password(self) -> str:
        """The URL with the user name kept and the password left out."""
        if self.user is None:
            return f"{self.scheme}://{self.rest}"
        return f"{self.scheme}://{self.user}@{self.rest}"

    def without_user_info(self) -> str:
        """The URL with neither user name nor password."""
        return f"{self.scheme}://{self.rest}"

    def decoded_user(self) -> str | None:
        """The user name, percent-decoded."""
        return None if self.user is None else unquote(self.user)

    def decoded_password(self) -> str | None:
        """The password, percent-decoded."""
        return None if self.password is None else unquote(self.password)


def split_user_info(url: str) -> UrlUserInfo | None:
    """Cut ``url`` at its user info; None if it has no ``scheme://``. Never raises."""
    scheme, separator, after = url.partition("://")
    if not separator:
        return None
    end = len(after)
    for stop in "/?#":
        index = after.find(stop)
        if index != -1:
            end = min(end, index)
    authority = after[:end]
    at = authority.rfind("@")
    ambiguous = False
    if "@" in after[end:]:
        # A '/', '?' or '#' inside the password ends the authority early for a strict parser;
        # the user info then reaches the last '@'. (A path holding '@' is over-redacted instead:
        # the safe side.)
        at = after.rfind("@")
        ambiguous = True
    if at == -1:
        return UrlUserInfo(scheme, None, None, after, ambiguous=False)
    user_info, rest = after[:at], after[at + 1 :]
    user, colon, password = user_info.partition(":")
    return UrlUserInfo(scheme, user, password if colon else None, rest, ambiguous=ambiguous)


def redact_url(url: str) -> str:
    """``url`` for display: a password becomes ``***`` (also when the URL does not parse), and
    so do the values of credential query parameters (``p``, ``password``, ``token``, ...)."""
    parts = split_user_info(url)
    if parts is None:
        # Not a URL: anything before an '@' may be a credential.
        at = url.rfind("@")
        return url if at == -1 else f"{URL_PASSWORD_MASK}@{url[at + 1 :]}"
    shown = parts.rest
    if parts.user is not None:
        shown = f"{parts.user}:{URL_PASSWORD_MASK}@{shown}"
    return f"{parts.scheme}://{_redact_query(shown)}"


def _redact_query(text: str) -> str:
    head, question, tail = text.partition("?")
    if not question:
        return text
    query, hash_sign, fragment = tail.partition("#")
    pairs = []
    for item in query.split("&"):
        parsed = parse_qsl(item, keep_blank_values=True)
        key = parsed[0][0] if parsed else item
        secret = key.lower() in _SECRET_QUERY_KEYS
        pairs.append(f"{item.partition('=')[0]}={URL_PASSWORD_MASK}" if secret else item)
    return f"{head}?{'&'.join(pairs)}{hash_sign}{fragment}"
