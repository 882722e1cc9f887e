"""A headless Chromium driven over the DevTools protocol, for the status-page tests and
the screenshot script (no Selenium or Playwright: a websocket and a few commands).

Chromium is started on an empty profile with ``--remote-debugging-port=0`` and
bound to 127.0.0.1; the port it picked is read from its ``DevTools listening
on`` line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from typing import Any

import aiohttp

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    return next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)


class Browser:
    """One headless Chromium with one page; use as ``async with Browser() as b``."""

    def __init__(self, width: int = 1280, height: int = 800, binary: str | None = None) -> None:
        self.width, self.height = width, height
        self.binary = binary or find_chromium()
        self._proc: asyncio.subprocess.Process | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self.console: list[str] = []
        """Console messages and exceptions of the page."""

    async def __aenter__(self) -> Browser:
        if self.binary is None:
            raise RuntimeError("no Chromium found (apt-get install chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="rmf-chromium-")
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            browser_ws = await asyncio.wait_for(self._devtools_url(), 30)
            port = int(browser_ws.split(":")[2].split("/")[0])
            self._http = aiohttp.ClientSession()
            async with self._http.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json(content_type=None)
            page = next(t for t in targets if t.get("type") == "page")
            self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
            await self.send("Page.enable")
            await self.send("Runtime.enable")
            await self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.width, "height": self.height, "deviceScaleFactor": 1}
                | {"mobile": False},
            )
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _devtools_url(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                raise RuntimeError("Chromium exited before opening its DevTools port")
            m = _LISTENING.search(line)
            if m:
                # Keep draining stderr so Chromium never blocks on a full pipe.
                asyncio.get_running_loop().create_task(self._drain())
                return m.group(1).decode()

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while await self._proc.stderr.readline():
            pass

    async def close(self) -> None:
        """Close the page connection and stop Chromium."""
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None
        if self._profile is not None:
            with contextlib.suppress(OSError):
                self._profile.cleanup()
            self._profile = None

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command; returns its result (raises on a protocol error)."""
        assert self._ws is not None
        msg_id = next(self._ids)
        command = {"id": msg_id, "method": method, "params": params or {}}
        await self._ws.send_str(json.dumps(command))
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), 30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection ended: {msg.type}")
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result
            self._event(data)

    def _event(self, data: dict[str, Any]) -> None:
        method = data.get("method")
        params = data.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description')}")

    async def goto(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        await self.send("Page.navigate", {"url": url})
        async with asyncio.timeout(30):
            while await self.evaluate("document.readyState") != "complete":  # noqa: ASYNC110
                await asyncio.sleep(0.1)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaits promises)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        """A PNG of the page as shown."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(result["data"])
