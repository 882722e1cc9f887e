"""The admin API's configuration endpoints (:mod:`rmfproxy.manage.revisions` does the work).

- ``GET /api/v1/config``: the running document (JSON) with ``ETag: "<revision>"``.
- ``PUT /api/v1/config``: the whole document (JSON, or YAML with a YAML content type).
- ``PUT /api/v1/cameras/{camera}``: one camera (its object under ``cameras``);
  201 when it is new, 200 when it replaced one.
- ``DELETE /api/v1/cameras/{camera}``: one camera removed.
- ``GET /api/v1/config/revisions``: the recent changes (with their camera operations).
- ``GET /api/v1/config/changes?since=REV&wait=S``: the pair's change feed
  (:mod:`rmfproxy.manage.sync`): the camera operations after revision ``REV``, waiting
  up to ``S`` seconds (at most 30) for one; 410 with a snapshot when ``REV`` is out of
  the kept history. Signed by the peer (:mod:`rmfproxy.manage.signing`) or with the
  bearer token.
- ``GET /api/v1/config/conflicts``: cameras both proxies of the pair changed.

Every one needs the bearer token (the document names recorders, users and the
environment variables holding secrets, never secret values). Writes need ``If-Match``:
428 without, 412 on a stale revision (the body says the current one); an invalid
document is 400 with every problem and its field; a field only a restart can change
is 409, named. A write answers the new ``ETag`` and what changed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from rmfproxy.config import ConfigError, parse_document
from rmfproxy.manage.revisions import (
    ConfigChange,
    ConfigKeeper,
    PreconditionFailed,
    PreconditionRequired,
)
from rmfproxy.manage.signing import (
    NONCE,
    SIGNATURE,
    TIMESTAMP,
    SignatureGuard,
    response_signature,
)
from rmfproxy.manage.sync import MAX_WAIT
from rmfproxy.ops.http import BodyError, body_bytes, error_response, parse_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = structlog.get_logger(__name__)

MAX_CONFIG_BODY = 4 << 20
"""Largest configuration document accepted (bytes): thousands of cameras."""


class ConfigRoutes:
    """The handlers; ``authorize`` answers a refusal (or None) for a request."""

    def __init__(
        self,
        keeper: Callable[[], ConfigKeeper],
        authorize: Callable[[web.Request], web.Response | None],
    ) -> None:
        self._keeper = keeper
        self._authorize = authorize
        self._signatures = SignatureGuard()

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/config", self.get)
        router.add_put("/api/v1/config", self.put)
        router.add_get("/api/v1/config/revisions", self.revisions)
        router.add_get("/api/v1/config/changes", self.changes)
        router.add_get("/api/v1/config/conflicts", self.conflicts)
        router.add_put("/api/v1/cameras/{camera}", self.put_camera)
        router.add_delete("/api/v1/cameras/{camera}", self.delete_camera)

    async def get(self, request: web.Request) -> web.Response:
        """The running document and its revision."""
        if (denied := self._authorize(request)) is not None:
            return denied
        keeper = self._keeper()
        return web.json_response(keeper.document, headers={"ETag": keeper.etag})

    async def revisions(self, request: web.Request) -> web.Response:
        """The recent accepted changes, oldest first."""
        if (denied := self._authorize(request)) is not None:
            return denied
        keeper = self._keeper()
        body = [
            {
                "revision": r.revision,
                "at": dt.datetime.fromtimestamp(r.at, dt.UTC).isoformat(timespec="milliseconds"),
                "origin": r.origin,
                "added": r.change.added,
                "removed": r.change.removed,
                "changed": r.change.changed,
                "ops": [
                    {"camera": op.camera, "op": "delete" if op.body is None else "put"}
                    | op.version.to_json()
                    for op in r.ops
                ],
            }
            for r in keeper.history
        ]
        return web.json_response({"revision": keeper.revision, "changes": body})

    async def changes(self, request: web.Request) -> web.Response:
        """The pair's change feed: camera operations after ``since`` (long poll)."""
        if (denied := await self._peer_or_admin(request)) is not None:
            return denied
        keeper = self._keeper()
        try:
            since = int(request.query.get("since", "0"))
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            return error_response(400, "since must be an integer and wait a number of seconds")
        if since < 0 or not math.isfinite(wait) or wait < 0:
            return error_response(400, "since and wait must not be negative")
        if keeper.changes_since(since) == [] and wait > 0:
            await keeper.wait_for_change(since, min(wait, MAX_WAIT))
        ops = keeper.changes_since(since)
        if ops is None:
            response = web.json_response(keeper.snapshot(), status=410)
        else:
            response = web.json_response(
                {
                    "revision": keeper.revision,
                    "node": keeper.node,
                    "changes": [op.to_json() for op in ops],
                }
            )
        signed = request.headers.get(SIGNATURE)
        if signed is not None and keeper.sync_token is not None:
            assert isinstance(response.body, bytes)
            response.headers[SIGNATURE] = response_signature(
                keeper.sync_token, signed, response.status, response.body
            )
        return response

    async def conflicts(self, request: web.Request) -> web.Response:
        """Cameras both proxies of the pair changed since they last agreed."""
        if (denied := await self._peer_or_admin(request)) is not None:
            return denied
        keeper = self._keeper()
        body = [
            c.to_json()
            | {"at": dt.datetime.fromtimestamp(c.at, dt.UTC).isoformat(timespec="milliseconds")}
            for c in keeper.conflicts.values()
        ]
        return web.json_response({"node": keeper.node, "conflicts": body})

    async def _peer_or_admin(self, request: web.Request) -> web.Response | None:
        """A request signed with the pair token, or one with the admin bearer token."""
        keeper = self._keeper()
        if SIGNATURE not in request.headers:
            return self._authorize(request)
        token = keeper.sync_token
        if token is None:
            return error_response(401, "signed requests need a pair (sync) configured")
        try:
            body = await body_bytes(request)
        except BodyError as exc:
            return error_response(exc.status, exc.message)
        headers = {h: request.headers.get(h, "") for h in (TIMESTAMP, NONCE, SIGNATURE)}
        why = self._signatures.check(
            token, request.method, request.path_qs, body, headers, time.time()
        )
        if why is not None:
            log.warning("sync.request_refused", reason=why, peer=request.remote)
            return error_response(401, f"signed request refused: {why}")
        return None

    async def put(self, request: web.Request) -> web.Response:
        """Replace the whole document."""
        return await self._write(
            request, lambda keeper, body, tag: keeper.replace(body, tag), status=200
        )

    async def put_camera(self, request: web.Request) -> web.Response:
        """Add or replace one camera."""
        camera = request.match_info["camera"]
        created = camera not in self._keeper().proxy.config.cameras
        return await self._write(
            request,
            lambda keeper, body, tag: keeper.put_camera(camera, body, tag),
            status=201 if created else 200,
        )

    async def delete_camera(self, request: web.Request) -> web.Response:
        """Remove one camera."""
        camera = request.match_info["camera"]
        if camera not in self._keeper().proxy.config.cameras:
            if (denied := self._authorize(request)) is not None:
                return denied
            return error_response(404, f"no camera {camera!r}")
        return await self._write(
            request,
            lambda keeper, _body, tag: keeper.delete_camera(camera, tag),
            status=200,
            with_body=False,
        )

    async def _write(
        self,
        request: web.Request,
        apply: Callable[[ConfigKeeper, Any, str | None], Awaitable[ConfigChange]],
        *,
        status: int,
        with_body: bool = True,
    ) -> web.Response:
        if (denied := self._authorize(request)) is not None:
            return denied
        keeper = self._keeper()
        if_match = request.headers.get("If-Match")
        try:
            body = await _document(request) if with_body else None
            change = await apply(keeper, body, if_match)
        except BodyError as exc:
            return error_response(exc.status, exc.message)
        except PreconditionRequired as exc:
            return error_response(428, str(exc), ETag=keeper.etag)
        except PreconditionFailed as exc:
            return error_response(412, str(exc), ETag=keeper.etag)
        except KeyError as exc:
            return error_response(404, f"no camera {exc.args[0]!r}")
        except ConfigError as exc:
            restart = [w for w, what in exc.problems if "needs a restart" in what]
            problems = [{"field": w, "problem": what} for w, what in exc.problems]
            code = 409 if restart and len(restart) == len(problems) else 400
            log.info("api.config_refused", status=code, problems=len(problems))
            return web.json_response(
                {"error": "configuration refused", "problems": problems}, status=code
            )
        log.info("api.config_changed", revision=keeper.revision, peer=request.remote)
        return web.json_response(
            {
                "revision": keeper.revision,
                "added": change.added,
                "removed": change.removed,
                "changed": change.changed,
            },
            status=status,
            headers={"ETag": keeper.etag},
        )


async def _document(request: web.Request) -> Any:
    """The body as data: YAML for a YAML content type, else JSON."""
    raw = await body_bytes(request, MAX_CONFIG_BODY)
    if "yaml" in request.content_type:
        try:
            return parse_document(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise BodyError(400, "the body is not UTF-8") from None
    return parse_json(raw)
