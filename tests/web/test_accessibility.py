"""Keyboard users, phones and assistive technology, in a real Chromium: axe-core finds no serious or critical
violation on any page of any role; at 390 px every navigation link is on screen and the page does not scroll
sideways; a live region's refresh keeps keyboard focus where it was; the skip link leads to the content.

axe-core comes inside `axe-playwright-python` (no download). Before: the top bar clipped to one item at 390 px,
a refresh every 2 s replaced whole regions (focus dropped to the page body), and there was no skip link.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from axe_playwright_python.async_playwright import Axe  # a dev dependency: missing is a failure, not a skip

from aiot.store.models import Role
from tests.web.conftest import USERS, WebPlatform, shot
from tests.web.test_roles import ensure_device_types, ensure_location, ensure_package, no_console_errors

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(240)]
BLOCKING = {"serious", "critical"}
PHONE = {"width": 390, "height": 844}
WIDEST = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > 391 && !e.closest('table'))
  .slice(0, 5)
  .map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""


async def _site(web: WebPlatform) -> dict[str, str]:
    """A location with a sensor and a controller, so detail pages have something to show."""
    await ensure_device_types(web, ("temperature", "fan"))
    location_id = await ensure_location(web, "axe-room", {"axe-temp": "temperature", "axe-fan": "fan"})
    devices = (
        await web.live.client.get(
            "/api/v1/devices", params={"location": location_id}, headers=web.live.headers(Role.admin)
        )
    ).json()
    return {"location": location_id, **{d["name"]: d["id"] for d in devices}}


async def _instance_workload_and_mail(web: WebPlatform, app: dict) -> tuple[str, str, str]:
    """An end user's app instance (its deployment page), a model workload (the admin's workload page) and a mail
    waiting in the outbox (the admin's mail page)."""
    from aiot.notify.outbox import enqueue

    admin = web.live.headers(Role.admin)
    room = await ensure_location(
        web, "axe-classroom", {"ax-t": "temperature", "ax-l": "light", "ax-f": "fan", "ax-a": "ac", "ax-p": "lamp"}
    )
    granted = await web.live.client.post(
        f"/api/v1/locations/{room}/grants", json={"user": USERS["end_user"]}, headers=admin
    )
    assert granted.status_code in (200, 201), granted.text
    made = await web.live.client.post(
        "/api/v1/instances", json={"app": app["id"], "location": room}, headers=web.live.headers(Role.end_user)
    )
    assert made.status_code == 201, made.text
    deployed = await web.live.client.post(
        "/api/v1/models/comfort/deploy", json={"replicas": 1}, headers=web.live.headers(Role.ai_developer)
    )
    assert deployed.status_code == 201, deployed.text
    with web.live.ctx.db.session() as session:
        mail_id = enqueue(session, "eve@example.com", "Your app is running", "Hello eve", kind="app_running").id
    return made.json()["id"], deployed.json()["workloads"][0]["id"], mail_id


async def _nav_links(page) -> list[str]:  # type: ignore[no-untyped-def]
    return await page.eval_on_selector_all("header nav a[href]", "links => links.map(a => a.getAttribute('href'))")


async def test_axe_finds_no_serious_violation_on_any_page_of_any_role(web: WebPlatform, tmp_path: Path) -> None:
    site = await _site(web)
    await ensure_device_types(web)  # the classroom app needs all five
    model = await ensure_package(web, "models", "models/comfort", Role.ai_developer, tmp_path)
    app = await ensure_package(web, "apps", "apps/smart-classroom", Role.app_developer, tmp_path)
    instance_id, workload_id, mail_id = await _instance_workload_and_mail(web, app)
    extra = {
        "ai_developer": [f"/models/{model['id']}"],
        "app_developer": [f"/dev/apps/{app['id']}"],
        "end_user": [f"/store/{app['id']}", f"/deployments/{instance_id}"],
        "admin": [
            f"/admin/locations/{site['location']}",
            f"/devices/{site['axe-temp']}",
            f"/devices/{site['axe-fan']}",
            f"/admin/workloads/{workload_id}",
            f"/admin/outbox/{mail_id}",
        ],
    }
    axe = Axe()
    problems: list[str] = []
    checked = 0
    anonymous = await (await web.browser.new_context(base_url=web.url)).new_page()
    for href in ("/login", "/no/such/page"):  # before logging in, and the page for a wrong address
        await anonymous.goto(href)
        results = await axe.run(anonymous)
        checked += 1
        problems += [
            f"anonymous {href}: {v['id']} ({v['impact']})"
            for v in results.response["violations"]
            if v["impact"] in BLOCKING
        ]
    await anonymous.context.close()
    for role in USERS:
        page = await web.page_as(role)
        for href in [*await _nav_links(page), *extra.get(role, [])]:
            await page.goto(href)
            await page.wait_for_load_state("load")
            results = await axe.run(page)
            checked += 1
            for violation in results.response["violations"]:
                if violation["impact"] in BLOCKING:
                    targets = ", ".join(str(node["target"]) for node in violation["nodes"][:3])
                    problems.append(
                        f"{role} {href}: {violation['id']} ({violation['impact']}): {violation['help']} at {targets}"
                    )
        await page.context.close()
    assert checked >= 20, checked  # every role's pages were visited, not an empty list
    assert not problems, "axe-core violations:\n" + "\n".join(problems)
    no_console_errors(web)


async def test_at_390_px_every_navigation_link_is_on_screen_and_nothing_scrolls_sideways(web: WebPlatform) -> None:
    for role in USERS:
        page = await web.page_as(role)
        await page.set_viewport_size(PHONE)
        links = await _nav_links(page)
        assert len(links) >= 2, links
        for href in links:
            await page.goto(href)
            await page.wait_for_load_state("load")
            for link in await page.query_selector_all("header nav a[href]"):
                box = await link.bounding_box()
                assert box is not None and await link.is_visible(), f"{role} {href}: a nav link is hidden"
                assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, (role, href, box)
            width = await page.evaluate("document.documentElement.scrollWidth")
            wide = await page.evaluate(WIDEST)
            assert width <= PHONE["width"] + 1, f"{role} {href}: the page is {width} px wide at 390 px: {wide}"
        last = (await page.query_selector_all("header nav a[href]"))[-1]
        target = await last.get_attribute("href")
        await last.click()
        await page.wait_for_url(f"**{target}")
        if role == "admin":
            await shot(page, "nav-390px-admin")
        await page.context.close()
    no_console_errors(web)


async def test_a_live_refresh_keeps_keyboard_focus_and_the_skip_link_leads_to_the_content(web: WebPlatform) -> None:
    site = await _site(web)
    page = await web.page_as("admin")
    await page.goto(f"/admin/locations/{site['location']}")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.classList.contains('skip-link')")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"

    link = f"#devices-live a[href='/devices/{site['axe-fan']}']"
    await page.focus(link)
    await page.evaluate(
        "window.__swaps = 0; document.body.addEventListener('htmx:afterSwap', () => { window.__swaps += 1; })"
    )
    for _ in range(150):  # up to 30 s (wait_for_function would need 'unsafe-eval' under our CSP)
        if await page.evaluate("window.__swaps") >= 2:  # refreshed every 2 s; a loaded machine answers slower
            break
        await asyncio.sleep(0.2)
    assert await page.evaluate("window.__swaps") >= 1, "the live region did not refresh"
    focused = await page.evaluate(
        "[document.activeElement.getAttribute('href'), !!document.activeElement.closest('#devices-live')]"
    )
    assert focused == [f"/devices/{site['axe-fan']}", True], focused
    await page.context.close()
    no_console_errors(web)
