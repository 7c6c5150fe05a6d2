"""A browser that opens a page URL that does not exist gets an HTML page with the way home, not the API's JSON;
programs (API paths, or no text/html in Accept) keep the JSON error shape. A page that fails on a bug of ours
shows a readable page with a reference, never the exception's text or a traceback."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import APIRouter

from aiot.launch.http_app import create_app
from aiot.store.models import Role
from aiot.web.routing import WebRoute
from tests.support.live import live_platform


async def test_unknown_pages_are_html_for_browsers_and_json_for_programs(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        page = await live.client.get("/no/such/page", headers=browser)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "Page not found" in page.text and 'href="/"' in page.text and "/no/such/page" in page.text
        program = await live.client.get("/no/such/page")
        assert program.status_code == 404 and program.json()["error"]["code"] == "not_found"
        api = await live.client.get("/api/v1/no-such-route", headers={**browser, **live.headers(Role.admin)})
        assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
        missing = await live.client.get("/api/v1/devices/dev_nope", headers={**browser, **live.headers(Role.admin)})
        assert missing.status_code == 404 and "dev_nope" in missing.json()["error"]["message"]


async def test_a_failing_page_shows_a_reference_not_the_exception(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        app = create_app(live.ctx)
        broken = APIRouter(route_class=WebRoute)

        @broken.get("/broken-page")
        async def broken_page() -> None:
            raise RuntimeError("db password hunter2 in /srv/secret/path.py")

        app.include_router(broken)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            page = await client.get("/broken-page", headers={"accept": "text/html"})
        assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
        assert "Something went wrong" in page.text and "reference" in page.text
        assert "hunter2" not in page.text and "Traceback" not in page.text and "RuntimeError" not in page.text
