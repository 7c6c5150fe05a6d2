"""Each role's main path through the web UI, in a real Chromium against a real server, NATS and ingest.

The tests tell one story in order (admin sets up the site, the AI developer brings the comfort model, the app
developer the smart-classroom app, the end user schedules it); each also makes sure of what it needs through
the API, so it can run alone. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path

import nats
import pytest

from aiot.artifacts.packing import zip_folder
from aiot.bus import codec
from aiot.devices import subjects
from aiot.store.models import Role, User
from tests.web.conftest import EXAMPLES, USERS, WebPlatform, shot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(120)]

CLASSROOM_TYPES = ("temperature", "light", "fan", "ac", "lamp")


# ---------------------------------------------------------------------- API helpers (set-up, not under test)


async def ensure_device_types(web: WebPlatform, names: tuple[str, ...] = CLASSROOM_TYPES) -> None:
    for name in names:
        body = (EXAMPLES / "device-types" / f"{name}.json").read_bytes()
        r = await web.live.client.post("/api/v1/device-types", content=body, headers=web.live.headers(Role.admin))
        assert r.status_code in (200, 201), r.text


async def ensure_package(web: WebPlatform, collection: str, folder: str, who: Role, tmp: Path) -> dict:
    archive = zip_folder(EXAMPLES / folder, tmp / f"{folder.replace('/', '_')}.zip")
    r = await web.live.client.post(
        f"/api/v1/{collection}",
        content=archive.read_bytes(),
        headers={**web.live.headers(who), "Content-Type": "application/zip"},
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


async def ensure_location(web: WebPlatform, name: str, devices: dict[str, str]) -> str:
    headers = web.live.headers(Role.admin)
    r = await web.live.client.get(f"/api/v1/locations/{name}", headers=headers)
    if r.status_code == 404:
        r = await web.live.client.post("/api/v1/locations", json={"name": name}, headers=headers)
        assert r.status_code == 201, r.text
    location_id = r.json()["id"]
    existing = {
        d["name"]
        for d in (
            await web.live.client.get("/api/v1/devices", params={"location": location_id}, headers=headers)
        ).json()
    }
    for device, type_name in devices.items():
        if device not in existing:
            r = await web.live.client.post(
                "/api/v1/devices",
                json={"name": device, "device_type": type_name, "location": location_id},
                headers=headers,
            )
            assert r.status_code == 201, r.text
    return location_id


def no_console_errors(web: WebPlatform) -> None:
    errors, web.console_errors[:] = list(web.console_errors), []
    assert not errors, "browser console errors:\n" + "\n".join(errors)


async def publish_reading(url: str, device_id: str, password: str, values: dict) -> None:
    """Publish as the device itself, with the credential the page showed (the auth service applies it within
    seconds, so the first attempts may be refused)."""
    last: Exception | None = None
    for _ in range(50):
        try:
            nc = await nats.connect(
                url,
                user=device_id,
                password=password,
                connect_timeout=1,
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
        except Exception as exc:  # noqa: BLE001 - not authorised yet: retry
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            await nc.publish(subjects.device_subject(device_id, "data"), codec.encode_reading(values))
            await nc.flush()
        finally:
            await nc.close()
        return
    raise AssertionError(f"device {device_id} could not connect with its new credential: {last}")


# ---------------------------------------------------------------------- admin


async def test_admin_registers_location_and_device_and_sees_it_live(web: WebPlatform) -> None:
    page = await web.page_as("admin")
    assert page.url.endswith("/admin"), page.url
    await page.wait_for_selector("#services [data-service=ingest]")
    await shot(page, "admin-health")

    # users: a bad password is reported next to its field, then a good user is created
    await page.goto("/admin/users")
    await page.fill("#f-username", "carol")
    await page.fill("#f-password", "short")
    await page.click("#new-user button[type=submit]")
    assert "8" in await page.inner_text("#err-password")
    await shot(page, "admin-users-error")
    await page.fill("#f-password", "long-enough-password")
    await page.select_option("#f-role", "app_developer")
    await page.click("#new-user button[type=submit]")
    await page.wait_for_selector("tr[data-user=carol]")
    assert "carol created" in await page.inner_text("#flash")
    await page.select_option("tr[data-user=carol] select[name=role]", "ai_developer")
    await page.click("tr[data-user=carol] form.row button")
    assert "is now ai developer" in await page.inner_text("#flash")
    await shot(page, "admin-users")

    # device types: broken JSON is reported, a good definition is added
    await page.goto("/admin/device-types")
    await page.fill("#f-definition", '{"format": 1, "name": "Bad Name", "kind": "sensor"}')
    await page.click("#new-type button[type=submit]")
    problems = await page.inner_text("#problems")
    assert "name" in problems, problems
    await shot(page, "admin-device-types-error")
    await page.fill("#f-definition", (EXAMPLES / "device-types" / "temperature.json").read_text())
    await page.click("#new-type button[type=submit]")
    await page.wait_for_selector("#type-temperature")
    await shot(page, "admin-device-types")

    # a location, with a validation error first (no name)
    await page.goto("/admin/locations")
    tz = await page.input_value("#f-timezone")
    assert tz == "UTC", f"browser time zone not filled in: {tz!r}"
    await page.click("#new-location button[type=submit]")
    assert await page.inner_text("#err-name")
    await page.fill("#f-name", "Room 101")
    await page.fill("#f-kind", "school")
    await page.fill("#f-timezone", "Asia/Kolkata")
    await page.click("#new-location button[type=submit]")
    await page.wait_for_selector("#new-device")
    assert "Room 101" in await page.inner_text("h1")

    # a device: the credential is shown once; it comes online when it publishes a reading
    await page.click("#new-device button[type=submit]")
    assert await page.inner_text("#err-name")
    await page.fill("#f-name", "thermo-1")
    await page.select_option("#f-device_type", "temperature")
    await page.click("#new-device button[type=submit]")
    await page.wait_for_selector("#credential")
    device_id = await page.inner_text("#cred-username")
    password = await page.inner_text("#cred-password")
    assert device_id.startswith("dev_") and len(password) >= 16
    await shot(page, "admin-device-credential")
    row = page.locator("tr[data-device=thermo-1]")
    assert "never seen" in await row.locator(".presence").inner_text()
    await publish_reading(web.live.nats.url, device_id, password, {"temperature": 23.5})
    await row.locator(".latest", has_text="temperature=23.5").wait_for(timeout=10_000)
    assert "online" in await row.locator(".presence").inner_text()
    await shot(page, "admin-location-live")

    # rotate: a new password, shown once again
    await row.locator("button", has_text="Rotate").click()
    await page.wait_for_selector("#credential")
    assert await page.inner_text("#cred-password") != password

    # people with access: the end user is granted the room, then it is taken back
    await page.goto("/admin/locations")
    await page.click("#locations a:text-is('Room 101')")
    await page.wait_for_selector("#new-grant")
    assert "Only admins see this location" in await page.inner_text("#grants")
    await page.select_option("#f-user", USERS["end_user"])
    await page.click("#new-grant button[type=submit]")
    await page.wait_for_selector(f"tr[data-grant={USERS['end_user']}]")
    assert "may now use Room 101" in await page.inner_text("#flash")
    await shot(page, "admin-location-grants")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click(f"tr[data-grant={USERS['end_user']}] button")
    await page.wait_for_selector("#flash")
    assert "no longer sees" in await page.inner_text("#flash")
    assert await page.locator(f"tr[data-grant={USERS['end_user']}]").count() == 0

    await page.goto("/admin/nodes")
    await page.wait_for_selector("#nodes-live")
    await shot(page, "admin-nodes")
    await page.context.close()
    no_console_errors(web)


# ---------------------------------------------------------------------- AI developer


def broken_model(tmp: Path) -> Path:
    """The comfort model with two mistakes in model.json (a bad version and an unknown input type)."""
    good = zip_folder(EXAMPLES / "models" / "comfort", tmp / "comfort-good.zip")
    bad = tmp / "comfort-bad.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "model.json":
                manifest = json.loads(data)
                manifest["version"] = "one point oh"
                manifest["inputs"]["temperature"]["type"] = "float"
                data = json.dumps(manifest).encode()
            dst.writestr(item, data)
    return bad


async def test_ai_developer_uploads_bad_then_good_model(web: WebPlatform, tmp_path: Path) -> None:
    page = await web.page_as("ai_developer")
    assert page.url.endswith("/models"), page.url
    await page.click("#upload-form button[type=submit]")
    assert "choose" in await page.inner_text("#err-file")

    await page.set_input_files("#f-file", str(broken_model(tmp_path)))
    await page.click("#upload-form button[type=submit]")
    rows = await page.locator("#problems tbody tr").all_inner_texts()
    assert any("model.json" in r and "version" in r for r in rows), rows
    assert any("model.json" in r and "inputs.temperature" in r for r in rows), rows
    await shot(page, "ai-upload-errors")

    await page.set_input_files("#f-file", str(zip_folder(EXAMPLES / "models" / "comfort", tmp_path / "comfort.zip")))
    await page.click("#upload-form button[type=submit]")
    await page.wait_for_selector("#deploy-form")
    assert "comfort" in await page.inner_text("h1")
    assert "temperature" in await page.inner_text("main")
    # the prediction form explains why it cannot answer yet, next to the form
    await page.click("#predict-form button[type=submit]")
    await page.wait_for_selector("#predict #form-errors")
    assert "is not deployed" in await page.inner_text("#predict #form-errors")
    # invalid JSON is reported next to the inputs field
    await page.fill("#f-inputs", "{not json")
    await page.click("#predict-form button[type=submit]")
    await page.wait_for_selector("#err-inputs")
    # a bad replica count is reported next to its field
    await page.fill("#f-replicas", "0")
    await page.click("#deploy-form button[type=submit]")
    assert await page.inner_text("#err-replicas")
    await shot(page, "ai-model-detail")
    await page.goto("/models")
    await page.wait_for_selector("[data-model=comfort]")
    await shot(page, "ai-models")
    await page.context.close()
    no_console_errors(web)


# ---------------------------------------------------------------------- app developer


async def test_app_developer_browses_and_uploads_app(web: WebPlatform, tmp_path: Path) -> None:
    await ensure_device_types(web)
    await ensure_package(web, "models", "models/comfort", Role.ai_developer, tmp_path)
    page = await web.page_as("app_developer")
    assert page.url.endswith("/dev/apps"), page.url
    await page.goto("/catalog")
    await page.wait_for_selector("[data-model=comfort]")
    assert "temperature" in await page.inner_text("[data-device-type=temperature]")
    await shot(page, "appdev-catalog")

    # an app naming a model that does not exist is refused, naming app.json and the field
    bad = tmp_path / "bad-app"
    bad.mkdir()
    for item in (EXAMPLES / "apps" / "smart-classroom").iterdir():
        (bad / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((bad / "app.json").read_text())
    manifest["context"]["models"]["comfort"]["name"] = "no-such-model"
    (bad / "app.json").write_text(json.dumps(manifest))
    await page.goto("/dev/apps")
    await page.set_input_files("#f-file", str(zip_folder(bad, tmp_path / "bad-app.zip")))
    await page.click("#upload-form button[type=submit]")
    rows = await page.locator("#problems tbody tr").all_inner_texts()
    assert any("app.json" in r and "no-such-model" in r for r in rows), rows
    await shot(page, "appdev-upload-errors")

    archive = zip_folder(EXAMPLES / "apps" / "smart-classroom", tmp_path / "classroom.zip")
    await page.set_input_files("#f-file", str(archive))
    await page.click("#upload-form button[type=submit]")
    await page.wait_for_selector("#instances")
    assert "smart-classroom" in await page.inner_text("h1")
    await shot(page, "appdev-app")
    await page.context.close()
    no_console_errors(web)


# ---------------------------------------------------------------------- end user


async def test_end_user_schedules_app_and_opens_its_address(web: WebPlatform, tmp_path: Path) -> None:
    await ensure_device_types(web)
    await ensure_package(web, "models", "models/comfort", Role.ai_developer, tmp_path)
    app = await ensure_package(web, "apps", "apps/smart-classroom", Role.app_developer, tmp_path)
    room = await ensure_location(
        web, "Room 101", {"thermo-1": "temperature", "light-1": "light", "fan-1": "fan", "ac-1": "ac", "lamp-1": "lamp"}
    )
    lobby = await ensure_location(web, "Lobby", {"thermo-lobby": "temperature"})
    elsewhere = await ensure_location(
        web, "Room 102", {"thermo-2": "temperature", "light-2": "light", "fan-2": "fan", "ac-2": "ac", "lamp-2": "lamp"}
    )
    for location in (room, lobby):  # Room 102 is not granted: someone else's room
        r = await web.live.client.post(
            f"/api/v1/locations/{location}/grants",
            json={"user": USERS["end_user"]},
            headers=web.live.headers(Role.admin),
        )
        assert r.status_code in (200, 201), r.text

    page = await web.page_as("end_user", timezone="Europe/Paris")
    assert page.url.endswith("/store"), page.url
    await page.wait_for_selector("[data-app=smart-classroom]")
    await shot(page, "user-store")
    await page.click("[data-app=smart-classroom] a.button")
    await page.wait_for_selector("#schedule-form")

    # only locations with every device type the app needs; the browser's time zone is the default
    offered = await page.eval_on_selector_all("#f-location option", "els => els.map(e => e.value)")
    assert room in offered and lobby not in offered and elsewhere not in offered, offered
    assert await page.input_value("#f-timezone") == "Europe/Paris"

    # no location chosen: the error is next to the location field
    await page.click("#schedule-form button[value=schedule]")
    assert "choose" in await page.inner_text("#err-location")
    assert await page.input_value("#f-timezone") == "Europe/Paris"

    await page.select_option("#f-location", room)
    zone = (await web.live.client.get(f"/api/v1/locations/{room}", headers=web.live.headers(Role.admin))).json()
    assert await page.input_value("#f-timezone") == zone["timezone"]  # the location's zone, not the browser's
    await page.fill("#f-times", "08:00, 14:30")
    await page.fill("#f-duration_minutes", "45")
    await page.click("#schedule-form button:has-text('Preview next runs')")
    await page.wait_for_selector("#preview #runs, #preview .alert")
    await shot(page, "user-schedule-form")

    scheduled = "not available" not in await page.inner_text("#preview")
    await page.click("#schedule-form button[value=schedule]" if scheduled else "#run-now")
    await page.wait_for_selector("#instance-facts")
    instance_id = (await page.inner_text(".page-head .mono")).strip()
    assert instance_id.startswith("ins_")
    assert "Room 101" in await page.inner_text("#instance-facts")
    await shot(page, "user-deployment")

    await page.goto("/deployments")
    await page.wait_for_selector(f"tr[data-instance={instance_id}]")
    if scheduled:  # its next runs are listed (the list of schedules carries them now), not "none"
        row = await page.inner_text(f"tr[data-instance={instance_id}]")
        assert "none" not in row and ("08:00" in row or "14:30" in row), row
    await shot(page, "user-deployments")

    # its address: a backend app gets the gateway's status page (a web app would answer itself)
    await page.goto(f"/deployments/{instance_id}")
    if await page.locator("#run-now").count():
        await page.click("#run-now")
        await page.wait_for_selector("#address")
    await page.click("#address")
    await page.wait_for_load_state("load")
    assert f"/apps/{instance_id}/" in page.url
    assert app["name"] in await page.inner_text("body")
    await shot(page, "user-app-address")
    await page.context.close()
    no_console_errors(web)


async def test_pages_need_login_and_the_right_role(web: WebPlatform) -> None:
    context = await web.browser.new_context(base_url=web.url)
    page = await context.new_page()
    await page.goto("/admin/users")
    assert "/login?next=/admin/users" in page.url
    await page.fill("#f-username", "enduser1")
    await page.fill("#f-password", "wrong-password")
    await page.click("button[type=submit]")
    assert "wrong username or password" in await page.inner_text("#err-password")
    await shot(page, "login-error")
    await context.close()

    page = await web.page_as("end_user")
    response = await page.goto("/admin/users")
    assert response is not None and response.status == 403
    assert "this page is for: admin" in await page.inner_text("main")
    await page.click("#logout")
    await page.wait_for_url("**/login")
    await page.goto("/deployments")
    assert "/login" in page.url
    await page.context.close()
    web.console_errors[:] = [e for e in web.console_errors if "403" not in e]  # the refused page itself
    no_console_errors(web)


async def test_app_page_script_cannot_act_as_the_admin_viewing_it(web: WebPlatform) -> None:
    """An app developer's page, opened by an admin, tries to read the platform's cookies and create an admin
    through the API (same-origin fetch, credentialed cross-origin fetch, and a no-preflight simple request)."""
    from tests.support.hostile_app import hostile_app, running_web_instance

    with web.live.ctx.db.session() as session:
        ids = {u.username: u.id for u in session.query(User)}
    with hostile_app(web.url) as evil:
        instance_id = running_web_instance(
            web.live.ctx.db, app_owner_id=ids["appdeveloper1"], instance_owner_id=ids["admin1"], endpoint=evil.url
        )
        page = await web.page_as("admin")
        platform_cookies = {c["name"]: c["value"] for c in await page.context.cookies(web.url)}
        await page.goto(f"/apps/{instance_id}/")
        await page.wait_for_function("document.title === 'done'", timeout=20_000)
        report = json.loads(await page.inner_text("#out"))
        users = (await web.live.client.get("/api/v1/users", headers=web.live.headers("admin"))).json()
        assert "mallory" not in [u["username"] for u in users], f"the app's script created a user: {report}"
        assert report["relative"] != 201 and report["platform"] != 201, report
        assert report["cookie"] == "", report  # no platform cookie (nor the app's own, stripped) is readable
        assert not page.url.startswith(web.url), f"the app was served on the platform's origin: {page.url}"
        # the app's Set-Cookie reached no one: the platform session is the one the admin logged in with
        after = {c["name"]: c["value"] for c in await page.context.cookies(web.url)}
        assert after.get("aiot_session") == platform_cookies["aiot_session"]
        assert not [c for c in await page.context.cookies() if c["name"] == "app_tracking"]
        seen = evil.seen[0]
        assert "cookie" not in seen and "authorization" not in seen, seen  # nothing of the viewer's reaches it
        assert seen["x-forwarded-prefix"] == f"/{instance_id}"
        await page.context.close()
    web.console_errors[:] = [e for e in web.console_errors if "evil" not in e and instance_id not in e]


async def test_the_store_shows_one_card_per_app_with_its_newest_version(web: WebPlatform, tmp_path: Path) -> None:
    """Two uploaded versions of an app showed as two cards that looked alike; now one card, the newest version,
    and the older ones linked under it."""
    import shutil

    await ensure_device_types(web)
    await ensure_package(web, "apps", "apps/smart-home", Role.app_developer, tmp_path)
    newer = tmp_path / "smart-home-1.1.0"
    shutil.copytree(EXAMPLES / "apps" / "smart-home", newer)
    manifest = json.loads((newer / "app.json").read_text())
    (newer / "app.json").write_text(json.dumps({**manifest, "version": "1.1.0"}))
    r = await web.live.client.post(
        "/api/v1/apps",
        content=zip_folder(newer, tmp_path / "new.zip").read_bytes(),
        headers={**web.live.headers(Role.app_developer), "Content-Type": "application/zip"},
    )
    assert r.status_code in (200, 201), r.text

    page = await web.page_as("end_user")
    await page.goto("/store")
    cards = page.locator("[data-app=smart-home]")
    assert await cards.count() == 1
    assert "1.1.0" in await cards.locator(".badge").first.inner_text()
    assert "1.0.0" in await cards.locator(".older-versions").inner_text()
    await page.context.close()
    no_console_errors(web)


async def test_end_user_upgrades_an_instance_and_rolls_it_back_on_its_page(web: WebPlatform) -> None:
    """The deployment page offers the app's other versions, shows the change as being checked, and rolls back
    by hand; the history lists both changes with their outcome."""
    from tests.apps.test_upgrades import GOOD, app_zip

    for version in ("1.0.0", "1.1.0"):
        r = await web.live.client.post(
            "/api/v1/apps",
            content=app_zip(version, GOOD),
            headers={**web.live.headers(Role.app_developer), "Content-Type": "application/zip"},
        )
        assert r.status_code in (200, 201), r.text
    lab = await ensure_location(web, "Upgrade Lab", {})
    r = await web.live.client.post(
        f"/api/v1/locations/{lab}/grants", json={"user": USERS["end_user"]}, headers=web.live.headers(Role.admin)
    )
    assert r.status_code in (200, 201), r.text
    r = await web.live.client.post(
        "/api/v1/instances",
        json={"app": "upgrade-probe:1.0.0", "location": lab},
        headers=web.live.headers(Role.end_user),
    )
    assert r.status_code == 201, r.text
    instance_id = r.json()["id"]

    page = await web.page_as("end_user")
    await page.goto(f"/deployments/{instance_id}")
    assert "Runs version 1.0.0" in await page.inner_text("#versions")
    assert await page.eval_on_selector_all("#upgrade-version option", "els => els.map(e => e.value)") == ["1.1.0"]
    await page.click("#upgrade")
    await page.wait_for_selector("#versions tbody tr")
    assert "Runs version 1.1.0" in await page.inner_text("#versions")
    row = await page.inner_text("#versions tbody tr")
    assert "1.0.0 → 1.1.0" in row and "rolling" in row, row  # idle: checked at its next run
    await shot(page, "user-upgrade")

    await page.click("#rollback")
    await page.wait_for_selector("#versions tbody tr:has-text('rolled back')")
    assert "Runs version 1.0.0" in await page.inner_text("#versions")
    assert "(by hand)" in await page.inner_text("#versions tbody")
    await page.context.close()
    no_console_errors(web)


async def _answer_commands(
    url: str, device_id: str, password: str, handled: list[str], listening: asyncio.Event
) -> None:
    """Play the fan: acknowledge each command with its new state, as a controller does."""
    for _ in range(150):
        try:
            nc = await nats.connect(
                url,
                user=device_id,
                password=password,
                connect_timeout=1,
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
            break
        except Exception:  # noqa: BLE001 - credential not applied yet
            await asyncio.sleep(0.2)
    else:
        raise AssertionError("the fan could not connect")
    state = {"power": False, "speed": 0}

    async def on_command(msg) -> None:  # type: ignore[no-untyped-def]
        command = codec.decode_command(msg.data)
        handled.append(command.command)
        if command.command == "set_speed":
            state.update(speed=int(command.args["speed"]), power=int(command.args["speed"]) > 0)
        await nc.publish(subjects.device_subject(device_id, "state"), codec.encode_state(state, cmd_id=command.cmd_id))

    await nc.subscribe(subjects.cmd_subject(device_id), cb=on_command)
    await nc.flush()
    listening.set()
    try:
        await asyncio.sleep(3600)
    finally:
        await nc.close()


async def test_device_page_charts_history_and_sends_a_command(web: WebPlatform) -> None:
    await ensure_device_types(web)
    room = await ensure_location(web, "Chart Room", {"thermo-c": "temperature", "fan-c": "fan"})
    admin = web.live.headers(Role.admin)
    devices = {
        d["name"]: d["id"]
        for d in (await web.live.client.get("/api/v1/devices", params={"location": room}, headers=admin)).json()
    }
    creds = {}
    for name in ("thermo-c", "fan-c"):
        r = await web.live.client.post(f"/api/v1/devices/{devices[name]}/credentials/rotate", headers=admin)
        assert r.status_code == 200, r.text
        creds[name] = r.json()["password"]
    for value in (19.5, 21.0, 23.5):
        await publish_reading(web.live.nats.url, devices["thermo-c"], creds["thermo-c"], {"temperature": value})

    async def history_count() -> int:
        r = await web.live.client.get(f"/api/v1/devices/{devices['thermo-c']}/history", headers=admin)
        return len(r.json())

    for _ in range(50):
        if await history_count() >= 3:
            break
        await asyncio.sleep(0.2)

    page = await web.page_as("admin")
    await page.goto(f"/admin/locations/{room}")
    await page.click("a[href='/devices/" + devices["thermo-c"] + "']")
    await page.wait_for_selector(".chart-box[data-field=temperature] svg.series")
    assert await page.get_attribute(".chart-box[data-field=temperature] svg", "data-points") == "3"
    assert await page.locator(".chart-box[data-field=temperature] circle.point").count() == 3
    assert "23.5" in await page.inner_text("#latest")
    await shot(page, "device-page-chart")

    handled: list[str] = []
    listening = asyncio.Event()
    fan = asyncio.create_task(_answer_commands(web.live.nats.url, devices["fan-c"], creds["fan-c"], handled, listening))
    try:
        await asyncio.wait_for(listening.wait(), 30)  # its new credential applied and its subscription live
        await page.goto(f"/devices/{devices['fan-c']}")
        await page.fill("#arg-set_speed-speed", "2")
        await page.click("#cmd-set_speed")
        flash = await (await page.wait_for_selector("#flash")).inner_text()
        assert "set_speed: acknowledged" in flash and "speed=2" in flash, flash[:500]
        assert handled == ["set_speed"]
        await shot(page, "device-page-command")
    finally:
        fan.cancel()
    await page.context.close()
    no_console_errors(web)


async def test_admin_sees_the_outbox_reads_a_mail_and_sends_it_again(web: WebPlatform) -> None:
    from aiot.notify.outbox import enqueue

    with web.live.ctx.db.session() as session:  # no SMTP server here: the mail waits, as the health page says
        mail_id = enqueue(
            session,
            "eve@example.com",
            "Your app smart-home is running",
            "Hello eve,\n\nopen it at: http://example.invalid/apps/ins_x/\n",
            kind="app_running",
        ).id
    page = await web.page_as("admin")
    await page.click("nav[aria-label=Main] a[href='/admin/outbox']")
    row = page.locator(f"tr[data-email={mail_id}]")
    assert "eve@example.com" in await row.inner_text() and "pending" in await row.inner_text()
    await page.click("a[href='/admin/outbox?status=sent']")
    assert await page.locator(f"tr[data-email={mail_id}]").count() == 0  # the filter hides it
    await page.goto(f"/admin/outbox/{mail_id}")
    assert "open it at: http://example.invalid/apps/ins_x/" in await page.inner_text("#email-body")
    await page.click("#retry")
    assert "Queued again for eve@example.com" in await (await page.wait_for_selector("#flash")).inner_text()
    await shot(page, "admin-outbox-email")
    await page.context.close()
    no_console_errors(web)
