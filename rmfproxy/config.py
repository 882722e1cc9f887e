"""Typed configuration loaded from YAML, with errors that name the field.

The loader never accepts an inline secret: passwords come from an environment
variable (``password_env``) or a file (``password_file``) and are resolved at
load time into :class:`Secret` values whose ``repr`` hides them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rmfproxy import tls

_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DIGITS = re.compile(r"^[0-9]+$")


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {where}: {what}" for where, what in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Secret:
    """A resolved secret value; never printed."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "***"


def check_host(host: str) -> None:
    """A host as written in a listen address or URL; ``ValueError`` saying what is wrong.

    An IPv4 literal must be a valid dotted quad (``999.1.1.1`` is refused rather than
    resolved), an IPv6 literal must be in brackets (RFC 3986 §3.2.2), anything else must
    be a host name (RFC 1123 §2.1: dot-separated labels of letters, digits and inner '-',
    each at most 63 characters, 253 in all; the last label not all digits, RFC 3696 §2).
    """
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"host {host!r} is not a valid [IPv6] address") from None
        return
    if ":" in host:
        raise ValueError(f"host {host!r}: an IPv6 address must be in brackets, e.g. [::1]")
    labels = host.removesuffix(".").split(".")
    if all(_DIGITS.match(label) for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"host {host!r} is not a valid IPv4 address (four numbers 0-255)"
            ) from None
        return
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(
            f"host {host!r} is not a valid host name (letters, digits and inner '-' in "
            "dot-separated labels of at most 63 characters)"
        )
    if _DIGITS.match(labels[-1]):
        raise ValueError(f"host {host!r}: the last label of a host name cannot be all digits")


def split_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` as ``(host without brackets, port)``; the value must be valid."""
    host, _, port = value.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8554")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port!r}")
    check_host(host)
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


def _rtp_port(value: int) -> int:
    # RFC 3550 §11: RTP on an even port, RTCP on the next (odd) one; both must exist.
    if value != 0 and (value % 2 or not 2 <= value <= 65534):
        raise ValueError(
            f"must be 0 (any free pair) or an even port from 2 to 65534 (RTP on it, RTCP on "
            f"the next one, at most 65535), got {value}"
        )
    return value


RtpPort = Annotated[int, AfterValidator(_rtp_port)]


def _check_secret_fields(what: str, inline: object, env: str | None, file: Path | None) -> None:
    """A secret is given by ``<what>_env`` or ``<what>_file``: never inline, not both."""
    if inline is not None:
        raise ValueError(
            f"an inline {what} is not accepted: use {what}_env (an environment "
            f"variable name) or {what}_file (a path)"
        )
    if env is not None and file is not None:
        raise ValueError(f"give {what}_env or {what}_file, not both")


def _read_secret(what: str, env: str | None, file: Path | None) -> Secret | None:
    """The secret from its environment variable or file (None when neither is set)."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"environment variable {env} is not set")
        return Secret(value)
    if file is not None:
        try:
            return Secret(file.read_text().rstrip("\r\n"))
        except OSError as exc:
            raise ValueError(f"cannot read {what} file {file}: {exc.strerror}") from None
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Credentials(_Model):
    """Where a password comes from: an environment variable or a file, never inline."""

    password_env: str | None = None
    password_file: Path | None = None
    password: str | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="after")
    def _no_inline_password(self) -> _Credentials:
        _check_secret_fields("password", self.password, self.password_env, self.password_file)
        return self

    def resolve_password(self) -> Secret | None:
        """Read the password from its environment variable or file."""
        return _read_secret("password", self.password_env, self.password_file)


class SourceConfig(_Credentials):
    """One recorder serving this camera."""

    url: str
    name: str | None = None
    transport: Literal["tcp", "udp"] = "tcp"
    username: str | None = None
    replay_url: str | None = None
    """Where this recorder replays its archive (ONVIF replay), if not on ``url``."""
    stall_timeout: float | None = Field(default=None, gt=0, le=120)
    """A fixed freeze-detection budget for this source (seconds without RTP), instead of
    the budget learned from its frame rate and its path's stalls."""
    tls_ca_file: Path | None = None
    """``rtsps://`` only: PEM bundle of the CAs this recorder's certificate must chain to
    (default: the system's CAs)."""
    tls_verify: bool = True
    """``rtsps://`` only: false accepts any certificate (encrypted, but unauthenticated)."""
    standby: Literal["hot", "warm", "cold"] = "hot"
    """How the source is pulled while the feed is not relaying it (nor about to): ``hot``
    pulled all the time; ``warm`` an RTSP session kept alive without media (set up, paused),
    or the low-rate ``standby_url`` pulled instead; ``cold`` not connected at all."""
    standby_url: str | None = None
    """``warm`` only: a low-rate sub-stream of the same recorder, pulled while standing by."""

    @model_validator(mode="after")
    def _standby_url_needs_warm(self) -> SourceConfig:
        if self.standby_url is not None and self.standby != "warm":
            raise ValueError(
                f"standby_url is only used with standby: warm (this source is {self.standby})"
            )
        return self

    @field_validator("url", "replay_url", "standby_url")
    @classmethod
    def _rtsp_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError("must be an rtsp:// URL with a host")
        host = parts.netloc.rpartition("@")[2]
        host = host[: host.index("]") + 1] if host.startswith("[") else host.partition(":")[0]
        check_host(host)
        if parts.password:
            raise ValueError(
                "URL carries a password: put the user in 'username' and the password "
                "in password_env or password_file"
            )
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError("URL has an invalid port") from None
        return v

    @model_validator(mode="after")
    def _tls_fields(self) -> SourceConfig:
        secure = urlsplit(self.url).scheme == "rtsps"
        if secure and self.transport == "udp":
            raise ValueError(
                "transport: udp with an rtsps:// URL would carry the video unencrypted "
                "next to the encrypted control connection: use transport: tcp"
            )
        if not secure and (self.tls_ca_file is not None or not self.tls_verify):
            raise ValueError("tls_ca_file and tls_verify apply to rtsps:// URLs only")
        if self.tls_ca_file is not None and not self.tls_verify:
            raise ValueError("tls_ca_file has no effect with tls_verify: false (give one)")
        return self


class CameraConfig(_Model):
    """One camera: its sources in priority order (first = primary)."""

    sources: list[SourceConfig] = Field(min_length=1)
    stall_timeout: float = Field(default=0.15, gt=0, le=60)
    """Floor of the freeze-detection budget (seconds without RTP)."""
    stall_timeout_max: float = Field(default=2.0, gt=0, le=120)
    """Ceiling of the freeze-detection budget."""
    failback_hold: float = Field(default=10.0, ge=0, le=3600)
    """Seconds a higher-priority source must be healthy before failing back to it."""
    outage_limit: float = Field(default=60.0, gt=0, le=86400)
    """Seconds client sessions stay open while no source is healthy."""
    hitless: bool = True
    """Merge sources that carry the same access units (no frame lost or repeated)."""
    id: str | None = Field(default=None, min_length=1, max_length=256)
    """Durable identity of the camera (a serial number, the VMS's camera GUID), kept across
    renames and sites: what ``rmfproxy consolidate`` matches cameras by. Not used on the wire."""
    bitrate_mbps: float = Field(default=4.0, gt=0, le=100_000)
    """Expected bitrate of one stream of this camera (Mbit/s), for ``rmfproxy plan``."""
    pending: bool = False
    """Imported while none of its sources answered (``rmfproxy consolidate --probe``): relayed
    like any camera, listed by ``rmfproxy plan`` until the flag is removed."""

    @model_validator(mode="before")
    @classmethod
    def _ceiling_follows_floor(cls, data: Any) -> Any:
        """A floor above the default ceiling raises the ceiling with it: ``stall_timeout: 2.5``
        (a central proxy waiting through a site's 2 s GOP, docs/chained.md) means at least
        2.5 s, not a budget clamped to the default 2 s."""
        if isinstance(data, dict) and "stall_timeout_max" not in data:
            floor = data.get("stall_timeout")
            ceiling = cls.model_fields["stall_timeout_max"].default
            if isinstance(floor, int | float) and not isinstance(floor, bool) and floor > ceiling:
                return {**data, "stall_timeout_max": floor}
        return data

    @model_validator(mode="after")
    def _floor_under_ceiling(self) -> CameraConfig:
        if self.stall_timeout > self.stall_timeout_max:
            raise ValueError(
                f"stall_timeout_max: {self.stall_timeout_max} is below stall_timeout "
                f"({self.stall_timeout}); the freeze budget's ceiling cannot be under its floor"
            )
        return self

    @model_validator(mode="after")
    def _primary_not_cold(self) -> CameraConfig:
        # A cold source's health is unknown until it is needed: the primary would never be
        # failed back to. Warm keeps a session (its state says whether the recorder is up).
        if self.sources and self.sources[0].standby == "cold":
            raise ValueError(
                "sources[0].standby: the first source (the primary) cannot be cold: failback "
                "needs to know when it is back; use warm (a session kept alive, no media)"
            )
        return self

    @model_validator(mode="after")
    def _unique_source_names(self) -> CameraConfig:
        names = [s.name for s in self.sources if s.name is not None]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        return self

    def source_name(self, index: int) -> str:
        """The source's configured name, or its host:port."""
        src = self.sources[index]
        if src.name:
            return src.name
        parts = urlsplit(src.url)
        return f"{parts.hostname}:{parts.port or 554}"


class UserConfig(_Credentials):
    """A client account for the RTSP server."""

    name: str = Field(min_length=1, max_length=64)
    cameras: list[str] | Literal["*"] = "*"


class TlsListenConfig(_Model):
    """The client-facing RTSPS listener (RTSP over TLS, interleaved TCP media only)."""

    listen: HostPort = "127.0.0.1:8322"
    """HOST:PORT of the TLS listener (RTSPS's registered port 322 needs root)."""
    cert_file: Path
    """PEM certificate chain, the server's certificate first; re-read on SIGHUP."""
    key_file: Path
    """PEM private key of that certificate, unencrypted; re-read on SIGHUP."""


class RtspConfig(_Model):
    """The client-facing RTSP server."""

    listen: HostPort | None = "127.0.0.1:8554"
    """HOST:PORT of the plain RTSP listener; null for none (then ``tls`` is required)."""
    tls: TlsListenConfig | None = None
    """The RTSPS listener, serving the same cameras (None: no TLS listener)."""
    session_timeout: int = Field(default=60, ge=5, le=3600)
    realm: str = "rmfproxy"
    users: list[UserConfig] = Field(default_factory=list)
    client_buffer_bytes: int = Field(default=4 << 20, ge=64 << 10, le=256 << 20)
    udp_rtp_port: RtpPort = 0
    request_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a client's started request may take to arrive whole (then it is closed)."""
    idle_timeout: float = Field(default=60.0, gt=0, le=86400)
    """Seconds a client connection without a session may stay silent."""
    max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    """Client connections at once; past it a connection gets 503 with Retry-After."""
    max_connections_per_ip: int = Field(default=256, ge=1, le=1_000_000)
    """Client connections at once from one address (a VMS opens one per camera)."""
    auth_ban_after: int = Field(default=0, ge=0, le=1_000_000)
    """Failed authentications from one address that ban it for auth_ban_seconds (0 = off)."""
    auth_ban_seconds: float = Field(default=300.0, gt=0, le=86400)
    """How long a ban lasts (503 with Retry-After), and the window failures count in."""

    @model_validator(mode="after")
    def _some_listener(self) -> RtspConfig:
        if self.listen is None and self.tls is None:
            raise ValueError("listen is null and tls is not set: no listener would serve clients")
        return self


class ApiConfig(_Model):
    """The admin HTTP listener: metrics, health, the admin API and the status page."""

    listen: HostPort = "127.0.0.1:9100"
    enabled: bool = True
    token_env: str | None = None
    """Environment variable holding the bearer token for mutating endpoints."""
    token_file: Path | None = None
    """File holding that token. With neither, mutating endpoints are disabled."""
    token: str | None = Field(default=None, exclude=True, repr=False)
    ready_grace: float = Field(default=30.0, ge=0, le=3600)
    """Seconds after start during which /readyz waits for every camera to have a healthy
    source; after it, the proxy is ready even with cameras down."""
    thumbnail_interval: float = Field(default=5.0, ge=0.5, le=3600)
    """Seconds a status-page thumbnail is cached before it is decoded again."""

    @model_validator(mode="after")
    def _token_source(self) -> ApiConfig:
        _check_secret_fields("token", self.token, self.token_env, self.token_file)
        return self

    def resolve_token(self) -> Secret | None:
        """Read the bearer token from its environment variable or file (None: not configured)."""
        secret = _read_secret("token", self.token_env, self.token_file)
        if secret is not None and len(secret.value.strip()) < 16:
            raise ValueError("the token must be at least 16 characters")
        return secret


class SyncConfig(_Model):
    """The other proxy of an active-active pair: camera changes follow each other."""

    peer: str
    """The other proxy's admin API base URL, e.g. ``http://10.0.0.2:9100``."""
    token_env: str | None = None
    """Environment variable holding the pair's shared secret (both proxies the same)."""
    token_file: Path | None = None
    """File holding that secret."""
    token: str | None = Field(default=None, exclude=True, repr=False)
    node: str | None = Field(default=None, min_length=1, max_length=64)
    """This proxy's name in the pair (default: the host name); the two must differ."""

    @field_validator("peer")
    @classmethod
    def _peer_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/?#@\s]+(/[^?#\s]*)?$", v):
            raise ValueError(
                "must be the peer's admin API base URL, http(s)://host:port, "
                "without credentials, query or fragment"
            )
        return v.rstrip("/")

    @model_validator(mode="after")
    def _token_source(self) -> SyncConfig:
        _check_secret_fields("token", self.token, self.token_env, self.token_file)
        if self.token_env is None and self.token_file is None:
            raise ValueError("needs token_env or token_file (the pair's shared secret)")
        return self

    def resolve_token(self) -> Secret:
        """Read the pair secret from its environment variable or file."""
        secret = _read_secret("token", self.token_env, self.token_file)
        assert secret is not None  # validated: one of the two is set
        if len(secret.value.strip()) < 16:
            raise ValueError("the token must be at least 16 characters")
        return secret


class LogConfig(_Model):
    """Logging: JSON for production, console for a terminal."""

    format: Literal["json", "console", "auto"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``90``, ``90s``, ``15m``, ``1h``, ``30d``, ``2w``.

    ``ValueError`` with a message for anything else (negative, empty, unknown unit).
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30d, 12h, 90m or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.strip().lower())):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(
            f"must be a duration like 30d, 12h, 90m or a number of seconds, got {value!r}"
        )
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


class ArchiveConfig(_Model):
    """Archive continuity: the coverage journal (which source covered which time)."""

    journal: Path | None = None
    """SQLite file of the coverage journal, e.g. /var/lib/rmfproxy/coverage.sqlite
    (None: no journal, the coverage API answers 503)."""
    retention: float = 30 * 86400.0
    """How long coverage history is kept: seconds, or 30d / 12h / 90m / 2w style."""
    heartbeat: float = Field(default=5.0, ge=1, le=60)
    """Seconds between writes of an open interval's end: what a crash can over-claim."""
    export_max_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    """Longest span one recording export may cover (seconds)."""
    max_exports: int = Field(default=2, ge=1, le=64)
    """Recording exports running at once (more get 503): each holds its span in memory."""
    max_playbacks: int = Field(default=8, ge=1, le=1000)
    """Stitched playback sessions replaying at once (more get 503 at PLAY)."""

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, v: object) -> float:
        seconds = parse_duration(v)
        if not 60 <= seconds <= 10 * 366 * 86400:
            raise ValueError(f"must be from 1 minute to 10 years, got {v!r}")
        return seconds

    @field_validator("journal")
    @classmethod
    def _journal_path(cls, v: Path | None) -> Path | None:
        if v is not None and (not str(v).strip() or v.is_dir()):
            raise ValueError(
                f"must be a file path, e.g. /var/lib/rmfproxy/coverage.sqlite, got {v}"
            )
        return v


class CapacityConfig(_Model):
    """What one recorder can serve to the proxy at once (``rmfproxy plan``)."""

    cameras: int | None = Field(default=None, gt=0, le=1_000_000)
    """Streams at once: one per camera source on this recorder (None: not limited)."""
    mbps: float | None = Field(default=None, gt=0, le=10_000_000)
    """Mbit/s of those streams together (None: not limited)."""

    @model_validator(mode="after")
    def _some_limit(self) -> CapacityConfig:
        if self.cameras is None and self.mbps is None:
            raise ValueError("give cameras, mbps or both (leave capacity out when unknown)")
        return self


class RecorderConfig(_Model):
    """A recorder as ``rmfproxy plan`` sees it; the proxy itself does not use this section.

    A source belongs to the recorder its ``name`` names here; a source whose name is not
    a key of ``recorders`` belongs to the recorder ``host:port`` of its URL.
    """

    site: str | None = Field(default=None, min_length=1, max_length=64)
    """Fault domain: recorders of one site can fail together (building, power, uplink)."""
    capacity: CapacityConfig | None = None
    """Its limits (None: unknown, its load is reported but not checked)."""


class Config(_Model):
    """The whole rmfproxy configuration file."""

    rtsp: RtspConfig = Field(default_factory=RtspConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    cameras: dict[str, CameraConfig] = Field(min_length=1)
    recorders: dict[str, RecorderConfig] = Field(default_factory=dict)
    sync: SyncConfig | None = None
    """The other proxy of an active-active pair (None: this proxy runs alone)."""
    """Recorder name -> site and capacity, for ``rmfproxy plan`` (optional)."""
    revision: int = Field(default=0, ge=0)
    """The document's revision: the proxy bumps it on every change it accepts (admin
    API, SIGHUP) and writes it back to the file; it is the API's ETag."""

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, v: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for cam_id in v:
            if not _CAMERA_ID.match(str(cam_id)):
                raise ValueError(
                    f"camera id {cam_id!r} must be 1-64 characters of letters, digits, "
                    "'_', '.', '-' (it becomes the URL path)"
                )
        return v

    @model_validator(mode="after")
    def _user_cameras_exist(self) -> Config:
        for user in self.rtsp.users:
            if user.cameras != "*":
                unknown = [c for c in user.cameras if c not in self.cameras]
                if unknown:
                    raise ValueError(f"user {user.name!r} lists unknown cameras: {unknown}")
        names = [u.name for u in self.rtsp.users]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        return self


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_config(data: Any) -> Config:
    """Validate already-loaded YAML data; raises :class:`ConfigError` naming every field."""
    if not isinstance(data, dict):
        raise ConfigError([("(top level)", "the file must hold a mapping with 'cameras'")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_model_problems(exc)) from None
    problems = []
    for cam_id, cam in cfg.cameras.items():
        for i, src in enumerate(cam.sources):
            try:
                src.resolve_password()
            except ValueError as exc:
                problems.append((f"cameras.{cam_id}.sources.{i}", str(exc)))
            if src.tls_ca_file is not None:
                try:
                    tls.client_context(src.tls_ca_file)
                except tls.TlsFileError as exc:
                    problems.append((f"cameras.{cam_id}.sources.{i}.tls_ca_file", str(exc)))
    if cfg.rtsp.tls is not None:
        try:
            tls.server_context(cfg.rtsp.tls.cert_file, cfg.rtsp.tls.key_file)
        except tls.TlsFileError as exc:
            problems.append((f"rtsp.tls.{exc.field}", str(exc)))
    for i, user in enumerate(cfg.rtsp.users):
        try:
            if user.resolve_password() is None:
                problems.append((f"rtsp.users.{i}", "needs password_env or password_file"))
        except ValueError as exc:
            problems.append((f"rtsp.users.{i}", str(exc)))
    try:
        cfg.api.resolve_token()
    except ValueError as exc:
        problems.append(("api", str(exc)))
    if cfg.sync is not None:
        try:
            cfg.sync.resolve_token()
        except ValueError as exc:
            problems.append(("sync", str(exc)))
    journal = cfg.archive.journal
    if journal is not None and not journal.parent.is_dir():
        problems.append(
            ("archive.journal", f"directory {journal.parent} does not exist (create it first)")
        )
    listeners: list[tuple[str, str | None]] = [("rtsp.listen", cfg.rtsp.listen)]
    if cfg.rtsp.tls is not None:
        listeners.append(("rtsp.tls.listen", cfg.rtsp.tls.listen))
    if cfg.api.enabled:
        listeners.append(("api.listen", cfg.api.listen))
    for j, (field_b, b) in enumerate(listeners):
        for field_a, a in listeners[:j]:
            if a is not None and b is not None and _same_tcp_port(a, b):
                problems.append(
                    (
                        field_b,
                        f"{b} takes the TCP port of {field_a} ({a}): "
                        "give the two listeners different ports",
                    )
                )
    if problems:
        raise ConfigError(problems)
    return cfg


def _model_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` for every error pydantic found."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append((_where(err["loc"]), msg))
    return problems


def parse_config_offline(data: Any) -> Config:
    """Validate the document alone, reading nothing of this machine.

    Every field is checked as in :func:`parse_config` (inline secrets refused too), but
    no secret is resolved (environment variables and password files stay unread) and no
    path or listener is checked: for tools that plan or merge configurations away from
    the proxy (``rmfproxy plan``, ``rmfproxy consolidate``). ``check`` and ``run`` use
    :func:`parse_config`.
    """
    if not isinstance(data, dict):
        raise ConfigError([("(top level)", "the file must hold a mapping with 'cameras'")])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_model_problems(exc)) from None


def _listen_hosts(host: str) -> set[str]:
    """The addresses a listen host stands for; ``*`` for every address."""
    host = host.lower().removesuffix(".")
    if host in ("0.0.0.0", "::"):
        # A wildcard takes the port on every local address; on Linux '::' is dual-stack,
        # and '0.0.0.0' clashes with any IPv4 address (a name may resolve to one).
        return {"*"}
    if host == "localhost":
        return {"127.0.0.1", "::1"}
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        return {host}


def _same_tcp_port(a: str, b: str) -> bool:
    """Would listeners on ``a`` and ``b`` (both ``HOST:PORT``) collide on one TCP port?"""
    host_a, port_a = split_host_port(a)
    host_b, port_b = split_host_port(b)
    if port_a != port_b or port_a == 0:  # port 0: each gets its own free port
        return False
    hosts_a, hosts_b = _listen_hosts(host_a), _listen_hosts(host_b)
    return "*" in hosts_a or "*" in hosts_b or bool(hosts_a & hosts_b)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML 1.2 §3.2.1.1).

    PyYAML silently keeps the last of duplicated keys, so a camera pasted twice under
    ``cameras`` would vanish; :class:`ConfigError` names the key path and both lines.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(loader, node)
        if duplicates:
            raise ConfigError(duplicates)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node) -> list[tuple[str, str]]:
    """``(key path, message)`` for every repeated key of every mapping, in file order."""
    found: list[tuple[int, str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:  # iterative: anchors may make the graph deep or even cyclic
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = _mapping_key(loader, key_node)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    found.append(
                        (
                            line,
                            _where((*path, key[1])),
                            f"duplicate key at line {line} (first at line {first_line[key]}): "
                            "YAML would silently keep only the last one",
                        )
                    )
                else:
                    first_line[key] = line
                stack.append((value_node, (*path, key[1])))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return [(where, what) for _, where, what in sorted(found)]


def _mapping_key(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[str, Any]:
    """A comparable key: the constructed scalar (``1`` and ``"1"`` differ), else its node."""
    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:merge":
        try:
            value = loader.construct_object(node)
            hash(value)
        except (yaml.YAMLError, TypeError):
            return node.tag, node.value
        return type(value).__name__, value
    return node.tag, f"<{type(node).__name__} at line {node.start_mark.line + 1}>"


def load_document(path: str | Path) -> Any:
    """The YAML document of a configuration file, not validated (duplicate keys and
    syntax errors are :class:`ConfigError`)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from None
    return parse_document(text, str(path))


def parse_document(text: str, where: str = "(body)") -> Any:
    """YAML (or JSON, a subset) text as data; :class:`ConfigError` on syntax errors and
    duplicate keys."""
    try:
        return _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([(at, f"YAML syntax: {problem}")]) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file."""
    return parse_config(load_document(path))
