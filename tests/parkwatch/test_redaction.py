"""URL redaction: a password never survives, also in URLs that strict parsers cannot read."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parkwatch.redaction import redact_url, split_user_info


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:secret@db.example:8086", "http://user:***@db.example:8086"),
        ("https://user:secret@proxy.example/influx/", "https://user:***@proxy.example/influx/"),
        ("mqtts://collector@broker:8883", "mqtts://collector:***@broker:8883"),
        ("mqtt://broker:1883", "mqtt://broker:1883"),
        ("mqtt://[::1]:1883", "mqtt://[::1]:1883"),
        ("http://u:p%40ss%2Fw@[::1]:8086/x", "http://u:***@[::1]:8086/x"),
        # '/', '#', '?' and '@' unencoded in the password: strict parsers cut the host short.
        ("mqtt://u:pa/ss@broker:1883", "mqtt://u:***@broker:1883"),
        ("mqtt://u:pa#ss@broker:1883", "mqtt://u:***@broker:1883"),
        ("mqtt://u:pa?ss@broker:1883", "mqtt://u:***@broker:1883"),
        ("mqtt://u:p@ss@broker:1883", "mqtt://u:***@broker:1883"),
        ("http://u:a/b#c?d@e@host:8086/influx", "http://u:***@host:8086/influx"),
        (
            "http://host:8086/query?db=x&u=admin&p=secret",
            "http://host:8086/query?db=x&u=admin&p=***",
        ),
        ("http://host/?token=abc#frag", "http://host/?token=***#frag"),
        ("user:secret@host:1883", "***@host:1883"),  # no scheme: anything before '@' is hidden
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_split_user_info_decodes_and_flags_what_strict_parsers_misread() -> None:
    plain = split_user_info("mqtt://site%40a:p%40ss%3Aword@broker:1884")
    assert plain is not None
    assert (plain.decoded_user(), plain.decoded_password()) == ("site@a", "p@ss:word")
    assert plain.without_password() == "mqtt://site%40a@broker:1884"
    assert plain.without_user_info() == "mqtt://broker:1884"
    assert plain.ambiguous is False
    raw = split_user_info("mqtt://u:pa/ss#x@broker")
    assert raw is not None
    assert (raw.password, raw.rest, raw.ambiguous) == ("pa/ss#x", "broker", True)
    assert split_user_info("broker:1883") is None


SCHEMES = st.sampled_from(["http", "https", "mqtt", "mqtts"])
# Passwords of any printable text, tagged so they cannot coincide with the rest of the URL.
PASSWORDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1).map(
    lambda text: f"Zq{text}"
)
HOSTS = st.sampled_from(["db.example", "127.0.0.1", "[::1]", "influx"])
TAILS = st.sampled_from(["", ":8086", ":1883/", ":8086/influx/", "/a/b?db=x"])


@given(scheme=SCHEMES, password=PASSWORDS, host=HOSTS, tail=TAILS, encode=st.booleans())
def test_no_password_survives_redaction_raw_or_percent_encoded(
    scheme: str, password: str, host: str, tail: str, encode: bool
) -> None:
    written = quote(password, safe="") if encode else password
    shown = redact_url(f"{scheme}://collector:{written}@{host}{tail}")
    assert password not in shown
    assert written not in shown
    assert shown.startswith(f"{scheme}://collector:***@")
