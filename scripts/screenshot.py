"""Screenshot of the status page from a running demo, for the docs.

    .venv/bin/python scripts/screenshot.py [docs/status-page.png]

Starts the demo's recorders and proxy on free loopback ports, lets them run, kills
one primary recorder (so two cameras show a failover to the redundant recorder),
opens the status page in headless Chromium and saves a PNG.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rmfproxy.log import configure_logging
from rmfproxy.sim.browser import Browser
from rmfproxy.sim.demo import _fault, demo_proxy

ALL_THUMBS = (
    "Array.from(document.querySelectorAll('.tile img.thumb'))"
    ".every(i => i.naturalWidth > 0 && !i.hidden)"
)


async def capture() -> bytes:
    configure_logging("console", "warning")
    async with demo_proxy(port=0, api_port=0) as (sim, proxy):
        await asyncio.sleep(3.0)
        await _fault(sim, "primary-a", "kill")
        await asyncio.sleep(2.0)
        async with Browser(width=1400, height=900) as browser:
            await browser.goto(proxy.api_url("/"))
            async with asyncio.timeout(30):
                while not await browser.evaluate(ALL_THUMBS):  # noqa: ASYNC110
                    await asyncio.sleep(0.3)
            await asyncio.sleep(0.5)
            return await browser.screenshot()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png")
    png = asyncio.run(capture())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    print(f"wrote {target} ({len(png)} bytes)")
