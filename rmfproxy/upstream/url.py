"""RTSP URLs: credentials split off, and a redacted form for logs.

RFC 2326 §3.2 allows userinfo in an rtsp URL, but a recorder must never see it on the
request line (it goes in Authorization) and a log line must never carry it. Nothing in
this module puts any part of the input into an exception message.
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}
"""Default TCP ports: 554 for rtsp (RFC 2326 §3.2), 322 for rtsps (RFC 7826 §19.2)."""


def _parts(url: str) -> tuple[SplitResult, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise ValueError("malformed rtsp URL") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an rtsp:// or rtsps:// URL with a host")
    return parts, port


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without userinfo, username, password)``, both names percent-decoded.

    The clean URL keeps scheme, host, port, path and query (no fragment); ``ValueError``
    (without any part of ``url`` in its message) if this is not an rtsp URL with a host.
    """
    parts, port = _parts(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    clean = urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return clean, user, password


def redact(url: str) -> str:
    """The URL with any userinfo removed, safe for a log line or an error message."""
    try:
        return split_credentials(url)[0]
    except ValueError:
        return "<invalid url>"


def host_port(url: str) -> tuple[str, int]:
    """Host and port of an rtsp URL (default 554, or 322 for rtsps)."""
    parts, port = _parts(url)
    return parts.hostname or "", port if port is not None else DEFAULT_PORTS[parts.scheme.lower()]


def is_tls(url: str) -> bool:
    """Whether the URL asks for RTSP over TLS (``rtsps://``)."""
    return urlsplit(url).scheme.lower() == "rtsps"
