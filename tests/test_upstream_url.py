"""rtsp URLs: userinfo split off for the wire, redacted for logs, never echoed in errors."""

from __future__ import annotations

import pytest

from rmfproxy.upstream.url import host_port, is_tls, redact, split_credentials

SECRET = "s3cr/et"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://10.0.0.5/ch1", ("rtsp://10.0.0.5/ch1", None, None)),
        (
            "rtsp://admin:p%40ss@10.0.0.5:554/ch1?x=1",
            ("rtsp://10.0.0.5:554/ch1?x=1", "admin", "p@ss"),
        ),
        ("rtsp://admin@host/a", ("rtsp://host/a", "admin", None)),
        ("rtsp://admin:@host/a", ("rtsp://host/a", "admin", "")),
        ("RTSP://u:p@Host:8554", ("rtsp://host:8554/", "u", "p")),
        ("rtsp://u:p@[fe80::1]:8554/s#frag", ("rtsp://[fe80::1]:8554/s", "u", "p")),
        ("rtsps://u:p:q@host/s", ("rtsps://host/s", "u", "p:q")),
        ("rtsp://u:a@b@host/s", ("rtsp://host/s", "u", "a@b")),
    ],
)
def test_split_credentials(url: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_credentials(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://u:x@host/",
        "rtsp:///path",
        "not a url",
        f"rtsp://u:{SECRET}@host:99999/",
        # An unescaped '/' in the password ends the authority: the rest looks like a port.
        f"rtsp://u:{SECRET}@host/",
        "rtsp://host:port/",
    ],
)
def test_malformed_urls_are_refused_without_echo(url: str) -> None:
    with pytest.raises(ValueError) as err:
        split_credentials(url)
    assert "s3cr" not in str(err.value)
    assert redact(url) == "<invalid url>"


def test_redact_never_shows_userinfo() -> None:
    assert redact("rtsp://admin:secret@h/x") == "rtsp://h/x"
    assert redact("rtsp://h:8554/x?y=1") == "rtsp://h:8554/x?y=1"


def test_host_port_defaults() -> None:
    assert host_port("rtsp://u:p@cam.example/x") == ("cam.example", 554)
    assert host_port("rtsp://10.1.2.3:8554/x") == ("10.1.2.3", 8554)
    assert host_port("rtsps://rec/x") == ("rec", 322)
    assert host_port("rtsp://[::1]/x") == ("::1", 554)
    assert is_tls("rtsps://rec/x") and not is_tls("rtsp://rec/x")
