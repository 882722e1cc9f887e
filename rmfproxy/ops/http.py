"""HTTP helpers of the admin API: JSON errors, bounded JSON bodies."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

MAX_JSON_BODY = 64 << 10
"""Largest request body accepted (bytes); the switch body is a few dozen."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays/objects accepted in a JSON body."""
# A JSON string (RFC 8259 §7: a backslash always escapes the next character) or a bracket.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def error_response(status: int, message: str, **headers: str) -> web.Response:
    """A JSON error: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def json_nesting_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body``, counted without recursion.

    Brackets inside strings do not count. ``json.loads`` recurses once per level (a few
    thousand levels raise ``RecursionError``), so this runs first, in linear time.
    """
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


class BodyError(Exception):
    """The request body is refused with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def body_bytes(request: web.Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The request's body, at most ``limit`` bytes; :class:`BodyError` (413) if longer."""
    too_large = f"the body must be at most {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, too_large)
    try:
        raw = await request.read()  # also capped by the application's client_max_size
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(413, too_large) from None
    if len(raw) > limit:
        raise BodyError(413, too_large)
    return raw


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, bounded in depth; :class:`BodyError` (400) if not."""
    if json_nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BodyError(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BodyError(400, "the body is not valid JSON") from None


async def json_body(request: web.Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request's JSON body, bounded in size and depth; :class:`BodyError` if not."""
    return parse_json(await body_bytes(request, limit))
