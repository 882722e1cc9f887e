"""The admin API under hostile input: bounded bodies, bounded nesting, 405 with Allow,
JSON errors only, and wrong tokens logged once per client per interval.

Regressions from the hardening issue: deeply nested JSON gave a 500 with a traceback
(``json.loads`` of 10,000 nested lists raises ``RecursionError``); 405 answers had no
``Allow``; 907 wrong tokens gave 907 warning lines.

The API runs alone on 127.0.0.1, port 0, in front of a stand-in proxy: these tests are
about the HTTP edge, not the relay (tests/test_ops_api.py covers that end to end).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
import structlog

from rmfproxy.config import Secret
from rmfproxy.ops.api import AdminApi
from rmfproxy.ops.http import MAX_JSON_BODY, MAX_JSON_DEPTH, json_nesting_depth
from rmfproxy.relay.feed import Feed

TOKEN = "hardening-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SWITCH = "/api/v1/cameras/lobby/switch"


def no_source(index: int, listener: Any) -> tuple[str, Any]:
    raise AssertionError("the stand-in camera has no sources")


@asynccontextmanager
async def api(
    feed: Feed | None = None, **kwargs: Any
) -> AsyncIterator[tuple[AdminApi, aiohttp.ClientSession, str]]:
    """The admin API of a proxy with one camera 'lobby' that has no sources (never
    started: no sockets)."""
    proxy = SimpleNamespace(feeds={"lobby": feed or Feed("lobby", no_source, 0)})
    admin = AdminApi(cast(Any, proxy), cast(Any, None), token=Secret(TOKEN), **kwargs)
    await admin.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield admin, http, f"http://127.0.0.1:{admin.port}"
    finally:
        await admin.stop()


def nested(depth: int, inner: str = "null") -> str:
    return "[" * depth + inner + "]" * depth


# nesting -----------------------------------------------------------------------------------


async def test_deeply_nested_json_is_400_not_a_500() -> None:
    body = '{"source": ' + nested(10_000) + "}"
    with structlog.testing.capture_logs() as logs:
        async with api() as (_, http, base), http.post(base + SWITCH, data=body, headers=AUTH) as r:
            assert r.status == 400
            assert r.headers["Content-Type"].startswith("application/json")
            error = (await r.json())["error"]
    assert error == f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


async def test_nesting_limit_is_exact_and_strings_do_not_count() -> None:
    async with api() as (_, http, base):
        # 32 levels (the object and 31 lists) pass the depth check and reach validation.
        at_limit = '{"source": ' + nested(MAX_JSON_DEPTH - 1) + "}"
        async with http.post(base + SWITCH, data=at_limit, headers=AUTH) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "'source' must be a source name or null"
        over = '{"source": ' + nested(MAX_JSON_DEPTH) + "}"
        async with http.post(base + SWITCH, data=over, headers=AUTH) as r:
            assert r.status == 400
            assert "deeper than" in (await r.json())["error"]
        # Brackets inside a string (with escaped quotes) are text, not nesting.
        text = '[[[\\"' * 100
        async with http.post(base + SWITCH, data=json.dumps({"source": text}), headers=AUTH) as r:
            assert r.status == 400
            assert "has no source" in (await r.json())["error"]


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"3", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'["]]]]", "[[[[", "\\"[["]', 1),
        (b'"\\\\"[[', 2),  # an escaped backslash ends the string: these brackets count
        (b"[" * 100_000, 100_000),  # linear, no recursion
    ],
)
def test_nesting_depth_scan(body: bytes, depth: int) -> None:
    assert json_nesting_depth(body) == depth


# size --------------------------------------------------------------------------------------


async def test_body_over_64_kib_is_413() -> None:
    big = json.dumps({"source": "x" * MAX_JSON_BODY}).encode()
    async with api() as (_, http, base):
        async with http.post(base + SWITCH, data=big, headers=AUTH) as r:
            assert r.status == 413
            assert (await r.json())["error"] == f"the body must be at most {MAX_JSON_BODY} bytes"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        async with http.post(base + SWITCH, data=chunks(), headers=AUTH) as r:
            assert r.status == 413
            assert "at most" in (await r.json())["error"]
        fits = json.dumps({"source": "x" * (MAX_JSON_BODY - 100)})
        async with http.post(base + SWITCH, data=fits, headers=AUTH) as r:
            assert r.status == 400 and "has no source" in (await r.json())["error"]


# 405 and other errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", SWITCH, {"POST"}),
        ("DELETE", SWITCH, {"POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("PUT", "/api/v1/cameras", {"GET", "HEAD"}),
    ],
)
async def test_405_carries_allow(method: str, path: str, allowed: set[str]) -> None:
    async with api() as (_, http, base), http.request(method, base + path, headers=AUTH) as r:
        assert r.status == 405
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed
        assert (await r.json())["error"] == "Method Not Allowed"


async def test_a_bug_behind_an_endpoint_is_a_json_500_and_one_log_line() -> None:
    feed = Feed("lobby", no_source, 0)

    def bug(source: str | None) -> None:
        raise AttributeError("a bug")

    feed.switch_to = bug  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        async with (
            api(feed) as (_, http, base),
            http.post(base + SWITCH, json={"source": None}, headers=AUTH) as r,
        ):
            assert r.status == 500
            assert await r.json() == {"error": "internal error"}
    errors = [e for e in logs if e["event"] == "api.internal_error"]
    assert len(errors) == 1 and errors[0]["path"] == SWITCH


# wrong tokens ----------------------------------------------------------------------------------


def unauthorized(logs: list[Any]) -> list[Any]:
    return [e for e in logs if e["event"] == "api.unauthorized"]


async def test_wrong_tokens_are_logged_once_per_client_per_interval_with_a_count() -> None:
    interval = 1.0
    wrong = {"Authorization": "Bearer wrong-token-never-logged-0000"}
    with structlog.testing.capture_logs() as logs:
        async with api(auth_log_interval=interval) as (_, http, base):
            t0 = time.monotonic()
            for _ in range(40):
                async with http.post(base + SWITCH, json={"source": None}, headers=wrong) as r:
                    assert r.status == 401
                    assert r.headers["WWW-Authenticate"] == "Bearer"
            burst = time.monotonic() - t0
            # The first is logged at once, the rest sum up when the window ends.
            async with asyncio.timeout(interval + burst + 3):
                while sum(e["count"] for e in unauthorized(logs)) < 40:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.05)
    lines = unauthorized(logs)
    assert lines[0]["count"] == 1 and lines[0]["peer"] == "127.0.0.1"
    assert sum(e["count"] for e in lines) == 40
    assert len(lines) <= 2 + int(burst / interval), (burst, lines)
    assert "wrong-token" not in repr(logs)


async def test_suppressed_wrong_tokens_are_summed_up_at_stop() -> None:
    wrong = {"Authorization": "Bearer wrong-token-never-logged-0000"}
    with structlog.testing.capture_logs() as logs:
        async with api(auth_log_interval=3600) as (_, http, base):
            for _ in range(5):
                async with http.post(base + SWITCH, json={"source": None}, headers=wrong) as r:
                    assert r.status == 401
            assert [e["count"] for e in unauthorized(logs)] == [1]
    assert [e["count"] for e in unauthorized(logs)] == [1, 4]
    assert unauthorized(logs)[1]["summary"] is True
