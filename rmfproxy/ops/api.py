"""The admin HTTP listener: health, readiness, metrics, the admin API and the status page.

Documented in ``rmfproxy/ops/static/openapi.yaml`` (served at
``/api/v1/openapi.yaml``). Read-only endpoints are open (bind the listener to
a trusted address); mutating endpoints need ``Authorization: Bearer <token>``
with the token from ``api.token_env`` or ``api.token_file``, and are disabled
(403) when no token is configured.

Hardening: a JSON body is read only up to :data:`MAX_JSON_BODY` bytes (413 beyond) and
its nesting is measured by a linear scan before ``json.loads`` ever recurses (400 beyond
:data:`MAX_JSON_DEPTH`); every error, 405 with its ``Allow`` included, is a JSON object;
wrong tokens are logged once per client address per interval with their count.
"""

from __future__ import annotations

import asyncio
import hmac
import tempfile
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rmfproxy.archive.export import (
    ExportError,
    ExportTooLong,
    NoFootage,
    export_recording,
    recorder_sources,
)
from rmfproxy.archive.report import CoverageReport, parse_time
from rmfproxy.archive.store import JournalError
from rmfproxy.config import Secret
from rmfproxy.manage.plan import plan as plan_coverage
from rmfproxy.ops.config_api import MAX_CONFIG_BODY, ConfigRoutes
from rmfproxy.ops.http import (
    BodyError,
    error_response,
    json_body,
)
from rmfproxy.ops.metrics import ProxyMetrics
from rmfproxy.ops.thumbnail import Thumbnails
from rmfproxy.ratelimit import RateLimitedLog
from rmfproxy.relay.feed import Feed
from rmfproxy.relay.snapshot import FeedSnapshot, SwitchRecord, snapshot
from rmfproxy.upstream.url import redact

if TYPE_CHECKING:
    from rmfproxy.archive.runner import CoverageJournal
    from rmfproxy.ops.view import ProxyView

log = structlog.get_logger(__name__)

STATIC = resources.files("rmfproxy.ops") / "static"
_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_STATIC_TYPES[".yaml"] = "application/yaml"

AUTH_LOG_INTERVAL = 60.0
"""Seconds between log lines about wrong tokens from one client address."""
COVERAGE_DEFAULT_WINDOW = 3600.0
"""Seconds before ``end`` (default now) that a coverage query starts by default."""

# Response headers of an aiohttp HTTPException worth keeping in the JSON error.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def _switch_json(rec: SwitchRecord) -> dict[str, Any]:
    return {
        "at": datetime.fromtimestamp(rec.at, UTC).isoformat(timespec="milliseconds"),
        "from": rec.from_source,
        "to": rec.to_source,
        "direction": rec.reason,
        "reason": rec.cause,
        "detection_ms": round(rec.detection_s * 1000, 1),
        "gap_ms": round(rec.gap_s * 1000, 1),
    }


def camera_json(
    snap: FeedSnapshot, urls: list[str], *, sync_conflict: bool, switches: int = 10
) -> dict[str, Any]:
    """A camera's state as the API returns it; ``urls``: its sources' configured URLs."""
    cam = snap.camera
    sources = [
        {
            "name": s.name,
            "priority": s.index,
            "url": redact(urls[s.index]),
            "connected": s.connected,
            "compatible": s.compatible,
            "healthy": s.healthy,
            "active": s.active,
            "last_packet_age_s": _round(s.last_packet_age, 3),
            "heartbeat_budget_s": round(s.heartbeat_budget, 3),
            "path_allowance_s": round(s.path_allowance, 3),
            "path_stalls": s.path_stalls,
            "rtt_s": _round(s.rtt, 4),
            "frame_interval_s": _round(s.frame_interval, 4),
            "packets": s.packets,
            "bytes": s.bytes,
            "frames": s.frames,
            "packets_lost": s.packets_lost,
            "packets_dropped": s.packets_dropped,
            "bitrate_bps": round(s.bitrate),
            "reconnects": s.reconnects,
            "gop_bytes": s.gop_bytes,
            "gop_age_s": _round(s.gop_age, 3),
            "last_loss_reasons": list(s.loss_reasons),
            "merge": None if s.merge_state is None else s.merge_state.value,
            "standby": {
                "mode": s.standby.mode.value,
                "state": s.standby.state.value,
                "substream": s.standby.substream,
                "pause_supported": s.standby.pause_supported,
                "promotions": s.standby.promotions,
            },
            "wan_bytes": {"received": s.wan_received, "sent": s.wan_sent},
            "access_units": s.access_units,
            "thumbnail": f"/api/v1/cameras/{cam}/sources/{s.name}/thumbnail.jpg",
        }
        for s in snap.sources
    ]
    pending = snap.pending
    return {
        "id": cam,
        "url_path": f"/{cam}",
        "active": snap.active,
        "pending": None
        if pending is None
        else {"source": pending.source, "direction": pending.direction},
        "mode": "auto" if snap.manual_source is None else "manual",
        "manual_source": snap.manual_source,
        "healthy": snap.healthy_sources > 0,
        "delivering": snap.delivering,
        "output_stalls": snap.output_stalls,
        "clients": snap.clients,
        "no_healthy_source_seconds": round(snap.no_source_seconds, 3),
        "sync_conflict": sync_conflict,
        "sources": sources,
        "switches": [_switch_json(r) for r in reversed(snap.switches[-switches:])],
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class AdminApi:
    """The aiohttp application and listener of one proxy."""

    def __init__(
        self,
        proxy: ProxyView,
        metrics: ProxyMetrics,
        *,
        token: Secret | None,
        ready_grace: float = 30.0,
        thumbnail_interval: float = 5.0,
        auth_log_interval: float = AUTH_LOG_INTERVAL,
    ) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self._token = token
        self._auth_log: RateLimitedLog[str] = RateLimitedLog(auth_log_interval)
        self._auth_timer: asyncio.TimerHandle | None = None
        self.ready_grace = ready_grace
        self.started = time.monotonic()
        self.thumbnails = Thumbnails(thumbnail_interval)
        self._exports = 0
        """Recording exports running now."""
        self.app = web.Application(middlewares=[self._errors], client_max_size=MAX_CONFIG_BODY)
        r = self.app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics_page)
        r.add_get("/api/v1/cameras", self.cameras)
        r.add_get("/api/v1/cameras/{camera}", self.camera)
        r.add_post("/api/v1/cameras/{camera}/switch", self.switch)
        r.add_get("/api/v1/cameras/{camera}/sources/{source}/thumbnail.jpg", self.thumbnail)
        r.add_get("/api/v1/cameras/{camera}/coverage", self.coverage)
        r.add_get("/api/v1/cameras/{camera}/recording.mp4", self.recording)
        r.add_get("/api/v1/plan", self.plan)
        ConfigRoutes(lambda: self.proxy.keeper, self._authorize).register(r)
        r.add_get("/api/v1/openapi.yaml", self.static_file("openapi.yaml"))
        r.add_get("/", self.static_file("status.html"))
        r.add_get("/status.js", self.static_file("status.js"))
        r.add_get("/status.css", self.static_file("status.css"))
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle ---------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`port`)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("api.listening", host=host, port=self.port, mutating=self._token is not None)

    async def stop(self) -> None:
        """Stop listening (and log the wrong tokens not yet summed up)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        for peer, count in self._auth_log.drain():
            log.warning("api.unauthorized", peer=peer, count=count, summary=True)

    # helpers -----------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                # Keep what the status needs: 405 must carry Allow (RFC 9110 §15.5.6).
                kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
                return error_response(exc.status, exc.reason, **kept)
            raise
        except BodyError as exc:
            return error_response(exc.status, exc.message)
        except Exception:
            # A bug: the traceback goes to the log, the client gets a JSON 500.
            log.exception("api.internal_error", path=request.path, method=request.method)
            return error_response(500, "internal error")

    def _camera_json(self, cam: str, snap: FeedSnapshot, switches: int) -> dict[str, Any]:
        cfg = self.proxy.config.cameras[cam]
        urls = [s.url for s in cfg.sources]
        conflict = cam in self.proxy.keeper.conflicts
        return camera_json(snap, urls, sync_conflict=conflict, switches=switches)

    def _feed(self, request: web.Request) -> tuple[str, Feed]:
        cam = request.match_info["camera"]
        feed = self.proxy.feeds.get(cam)
        if feed is None:
            raise web.HTTPNotFound(reason=f"no camera {cam!r}")  # JSON via _errors
        return cam, feed

    def _authorize(self, request: web.Request) -> web.Response | None:
        if self._token is None:
            return error_response(
                403,
                "mutating endpoints are disabled: configure api.token_env or api.token_file",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token.value.encode()
        ):
            self._unauthorized(request)
            return error_response(
                401, "a valid bearer token is required", **{"WWW-Authenticate": "Bearer"}
            )
        return None

    def _unauthorized(self, request: web.Request) -> None:
        """Log a wrong token: one line per client address per interval, with the count."""
        peer = request.remote or "unknown"
        count = self._auth_log.hit(peer, time.monotonic())
        if count is not None:
            log.warning("api.unauthorized", peer=peer, path=request.path, count=count)
        self._arm_auth_summary()

    def _arm_auth_summary(self) -> None:
        deadline = self._auth_log.deadline()
        if deadline is None or self._auth_timer is not None:
            return
        delay = max(0.0, deadline - time.monotonic())
        self._auth_timer = asyncio.get_running_loop().call_later(delay, self._auth_summary)

    def _auth_summary(self) -> None:
        """Timer: the summary lines of windows that ended with suppressed wrong tokens."""
        self._auth_timer = None
        for peer, count in self._auth_log.flush(time.monotonic()):
            log.warning("api.unauthorized", peer=peer, count=count, summary=True)
        self._arm_auth_summary()

    @staticmethod
    def static_file_bytes(name: str) -> bytes:
        """The content of one packaged static file."""
        return (STATIC / name).read_bytes()

    def static_file(self, name: str) -> Any:
        """A handler serving one packaged static file."""
        suffix = name[name.rfind(".") :]

        async def handler(request: web.Request) -> web.Response:
            body = self.static_file_bytes(name)
            return web.Response(
                body=body,
                content_type=_STATIC_TYPES[suffix],
                headers={"Cache-Control": "no-cache"},
            )

        return handler

    # handlers ----------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """The process is up and its event loop answers."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when every camera has a healthy source and delivers video, or the grace
        period has passed."""
        snaps = [snapshot(feed) for feed in self.proxy.feeds.values()]
        down = [s.camera for s in snaps if not s.healthy_sources]
        stalled = [s.camera for s in snaps if s.healthy_sources and not s.delivering]
        waited = time.monotonic() - self.started
        ready = not (down or stalled) or waited >= self.ready_grace
        body = {
            "ready": ready,
            "cameras_without_healthy_source": down,
            "cameras_not_delivering": stalled,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        """Prometheus exposition."""
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def cameras(self, request: web.Request) -> web.Response:
        """Every camera's state."""
        return web.json_response(
            {
                "cameras": [
                    self._camera_json(cam, snapshot(feed), switches=5)
                    for cam, feed in self.proxy.feeds.items()
                ]
            }
        )

    async def camera(self, request: web.Request) -> web.Response:
        """One camera's state with its last 50 switches."""
        cam, feed = self._feed(request)
        return web.json_response(self._camera_json(cam, snapshot(feed), switches=50))

    async def switch(self, request: web.Request) -> web.Response:
        """Pin a source (``{"source": "name"}``) or go back to automatic (``{"source": null}``)."""
        denied = self._authorize(request)
        if denied is not None:
            return denied
        cam, feed = self._feed(request)
        body = await json_body(request)  # BodyError: 400/413 through _errors
        if not isinstance(body, dict) or "source" not in body:
            return error_response(400, "the body must be an object with 'source' (a name, or null)")
        source = body["source"]
        if source is not None and not isinstance(source, str):
            return error_response(400, "'source' must be a source name or null")
        names = [s.name for s in snapshot(feed).sources]
        if source is not None and source not in names:
            return error_response(
                400, f"camera {cam!r} has no source {source!r}; its sources: {', '.join(names)}"
            )
        feed.switch_to(source)
        log.info("api.switch", camera=cam, source=source or "auto", peer=request.remote)
        body = self._camera_json(cam, snapshot(feed), switches=5)
        return web.json_response(body, status=202)

    async def thumbnail(self, request: web.Request) -> web.Response:
        """A recent JPEG of one source's picture (from the keyframe of its current GOP)."""
        cam, feed = self._feed(request)
        name = request.match_info["source"]
        source = snapshot(feed).source(name)
        if source is None:
            return error_response(404, f"camera {cam!r} has no source {name!r}")
        jpeg = await self.thumbnails.get(feed, source.index)
        if jpeg is None:
            return error_response(503, "no picture from this source yet", **{"Retry-After": "2"})
        cache = f"max-age={max(1, int(self.thumbnails.interval))}"
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": cache})

    async def coverage(self, request: web.Request) -> web.Response:
        """Which source covered which part of ``[start, end)`` (default: the last hour)."""
        cam, _ = self._feed(request)
        journal = self.proxy.journal
        if journal is None:
            return error_response(503, "no coverage journal: configure archive.journal")
        times: dict[str, float] = {}
        for param in ("start", "end"):
            value = request.query.get(param)
            if value is None:
                continue
            try:
                times[param] = parse_time(value)
            except ValueError as exc:
                return error_response(400, f"parameter {param!r}: {exc}")
        end = times.get("end", time.time())
        start = times.get("start", end - COVERAGE_DEFAULT_WINDOW)
        if end <= start:
            return error_response(400, "parameter 'end' must be later than 'start'")
        try:
            per_source = await journal.intervals(cam, start, end)
        except JournalError as exc:  # stopping, or the file became unusable
            return error_response(503, f"the coverage journal cannot answer: {exc}")
        report = CoverageReport.build(cam, start, end, per_source)
        return web.json_response(report.to_json())

    async def plan(self, request: web.Request) -> web.Response:
        """The M->N coverage plan of the running configuration (as ``rmfproxy plan``)."""
        strict = request.query.get("strict_sites", "").lower() in ("1", "true", "yes")
        report = plan_coverage(self.proxy.config, strict_sites=strict)
        return web.json_response(report.to_json())

    async def recording(self, request: web.Request) -> web.StreamResponse:
        """One MP4 of ``[start, end)`` stitched from every recorder (``archive/export.py``)."""
        cam, _ = self._feed(request)
        journal = self.proxy.journal
        if journal is None:
            return error_response(503, "no coverage journal: configure archive.journal")
        times: dict[str, float] = {}
        for param in ("start", "end"):
            value = request.query.get(param)
            if value is None:
                return error_response(400, f"parameter {param!r} is required (ISO 8601 date-time)")
            try:
                times[param] = parse_time(value)
            except ValueError as exc:
                return error_response(400, f"parameter {param!r}: {exc}")
        start, end = times["start"], times["end"]
        if end <= start:
            return error_response(400, "parameter 'end' must be later than 'start'")
        limit = self.proxy.config.archive.export_max_seconds
        if self._exports >= self.proxy.config.archive.max_exports:
            # Each export holds its span in memory until muxed: a bounded number at once.
            return error_response(
                503,
                f"{self._exports} exports running (archive.max_exports): retry later",
                **{"Retry-After": "10"},
            )
        self._exports += 1
        try:
            return await self._export(request, cam, journal, start, end, limit)
        finally:
            self._exports -= 1

    async def _export(
        self,
        request: web.Request,
        cam: str,
        journal: CoverageJournal,
        start: float,
        end: float,
        limit: float,
    ) -> web.StreamResponse:
        with tempfile.TemporaryDirectory(prefix="rmfproxy-export-") as tmp:
            path = Path(tmp) / "recording.mp4"
            try:
                result = await export_recording(
                    cam,
                    start,
                    end,
                    journal=journal,
                    sources=recorder_sources(self.proxy.config, cam),
                    max_seconds=limit,
                    dest=path,
                )
            except ExportTooLong as exc:
                return error_response(413, str(exc))
            except NoFootage as exc:
                return error_response(404, str(exc))
            except JournalError as exc:
                return error_response(503, f"the coverage journal cannot answer: {exc}")
            except ExportError as exc:
                return error_response(502, str(exc))
            stamp = datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")
            response = web.StreamResponse(
                headers={
                    "Content-Type": "video/mp4",
                    "Content-Disposition": f'attachment; filename="{cam}-{stamp}.mp4"',
                    "Content-Length": str(result.size),
                    "X-Rmfproxy-Seams": str(result.seams),
                    "X-Rmfproxy-Gaps": str(len(result.gaps)),
                }
            )
            await response.prepare(request)
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    await response.write(chunk)
            await response.write_eof()
            return response
