"""HTTP control of running simulated recorders, so faults can be injected from the command line.

``POST /fault`` with JSON ``{"recorder": "r1", "fault": "freeze", "value": 0}``;
``GET /recorders`` lists recorders, their ports and cameras.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rmfproxy.sim.recorder import FAULTS, SimRecorder

RECORDERS: web.AppKey[dict[str, SimRecorder]] = web.AppKey("recorders", dict)
PORTS: web.AppKey[dict[str, int]] = web.AppKey("ports", dict)


async def _list(request: web.Request) -> web.Response:
    recs = request.app[RECORDERS]
    ports = request.app[PORTS]
    return web.json_response(
        {
            name: {"port": ports.get(name, r.port), "cameras": sorted(r.cameras)}
            for name, r in recs.items()
        }
    )


async def _fault(request: web.Request) -> web.Response:
    try:
        body: Any = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    rec = request.app[RECORDERS].get(str(body.get("recorder")))
    if rec is None:
        return web.json_response({"error": "unknown recorder"}, status=404)
    fault = str(body.get("fault"))
    if fault not in FAULTS:
        return web.json_response({"error": f"unknown fault; known: {list(FAULTS)}"}, status=400)
    try:
        value = float(body.get("value", 0.0))
    except (TypeError, ValueError):
        return web.json_response({"error": "value must be a number"}, status=400)
    await rec.apply(fault, value)
    return web.json_response({"ok": True, "recorder": rec.name, "fault": fault})


def control_app(
    recorders: dict[str, SimRecorder], ports: dict[str, int] | None = None
) -> web.Application:
    """The aiohttp application controlling ``recorders`` (``ports``: where clients reach
    them when not on their own port, e.g. through a WAN link)."""
    app = web.Application()
    app[RECORDERS] = recorders
    app[PORTS] = ports or {}
    app.router.add_get("/recorders", _list)
    app.router.add_post("/fault", _fault)
    return app
