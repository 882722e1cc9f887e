"""RTSP URLs: credentials split off, and a redacted form for logs."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without userinfo, username, password)``; ``ValueError`` if not an rtsp URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
        raise ValueError("not an rtsp:// URL with a host")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return clean, user, password


def redact(url: str) -> str:
    """The URL with any userinfo removed, safe for a log line or an error message."""
    try:
        return split_credentials(url)[0]
    except ValueError:
        return "<invalid url>"


def host_port(url: str) -> tuple[str, int]:
    """Host and port (default 554) of an rtsp URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 554
