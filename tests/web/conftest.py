"""A real platform behind a real HTTP server, and Debian's Chromium driven by Playwright.

The control plane (API + web pages) runs under uvicorn on a free port in the test's own event loop, beside the
embedded nats-server and the NATS auth and ingest services (`tests/support/live.py`), because nats-py is bound
to the loop it was created on. One platform and one browser serve the whole module; each test opens its own
browser context (its own cookies) and logs in through the login form.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn

from aiot.api.appsorigin import create_apps_app
from aiot.launch.http_app import create_app
from tests.support.live import PASSWORD, LivePlatform, live_platform

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
USERS = {"admin": "admin1", "ai_developer": "aideveloper1", "app_developer": "appdeveloper1", "end_user": "enduser1"}

if not CHROMIUM.exists():
    pytest.skip(
        f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )
playwright_api = pytest.importorskip("playwright.async_api", reason="browser tests need the playwright package")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class WebPlatform:
    live: LivePlatform
    url: str
    browser: object
    apps_url: str = ""
    console_errors: list[str] = field(default_factory=list)

    async def page_as(self, role: str, timezone: str | None = None):  # type: ignore[no-untyped-def]
        """A new browser context logged in through the form as the module's user of `role`."""
        context = await self.browser.new_context(
            base_url=self.url, viewport={"width": 1280, "height": 860}, timezone_id=timezone
        )
        page = await context.new_page()
        watch_console(page, self.console_errors)
        await page.goto("/login")
        await page.fill("#f-username", USERS[role])
        await page.fill("#f-password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_load_state("load")
        return page


def watch_console(page, sink: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Collect console errors and uncaught exceptions: every page must be free of them."""
    page.on(
        "console",
        lambda msg: sink.append(f"{page.url}: console.{msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: sink.append(f"{page.url}: uncaught: {exc}"))


async def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def web(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WebPlatform]:
    tmp = tmp_path_factory.mktemp("web")
    async with live_platform(tmp, services=("nats-auth", "ingest")) as live:
        app = create_app(live.ctx)  # the API with the web UI mounted
        port, apps_port = free_port(), free_port()
        # the apps origin on another host than the platform's (localhost vs 127.0.0.1), as ApiService does
        apps = create_apps_app(live.ctx)
        app.state.apps_url = apps.state.apps_url = f"http://localhost:{apps_port}"
        apps.state.platform_url = f"http://127.0.0.1:{port}"
        servers = [
            uvicorn.Server(
                # timeout_graceful_shutdown: the browser's live-refresh requests may still be open when the test
                # ends; without it uvicorn waited for them past the teardown's 10 s on a loaded CI machine.
                uvicorn.Config(
                    a,
                    host="127.0.0.1",
                    port=p,
                    log_level="warning",
                    lifespan="off",
                    access_log=False,
                    timeout_graceful_shutdown=2,
                )
            )
            for a, p in ((app, port), (apps, apps_port))
        ]
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        for _ in range(200):
            if all(server.started for server in servers) or any(task.done() for task in tasks):
                break
            await asyncio.sleep(0.02)
        assert all(server.started for server in servers), "uvicorn did not start"
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, env={**os.environ, "HOME": str(tmp)}
            )
            try:
                yield WebPlatform(
                    live=live, url=f"http://127.0.0.1:{port}", browser=browser, apps_url=f"http://localhost:{apps_port}"
                )
            finally:
                await browser.close()
                for server in servers:
                    server.should_exit = True
                await asyncio.wait_for(asyncio.gather(*tasks), 10)
