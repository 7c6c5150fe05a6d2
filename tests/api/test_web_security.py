"""Web security of the control plane at API level: CSRF that an app's script cannot get round, security headers,
login throttling and login CSRF, the /metrics token, and the apps origin's gateway (tickets, cookie, headers).

The browser half (an app page's script attacking the admin who views it) is in tests/web/test_roles.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from aiot.launch.http_app import create_app
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store.engine import Database
from aiot.store.models import Role, User
from tests.support.api_fixtures import PASSWORD, login
from tests.support.hostile_app import hostile_app, running_web_instance

NEW_USER = {"username": "mallory", "password": "mallory-password-1", "role": "admin"}


def _client(database: Database, tmp_path: Path, **settings: object) -> TestClient:
    ctx = ServiceContext(
        settings=Settings(data_dir=tmp_path / "data", database_url=database.url, **settings), db=database
    )
    return TestClient(create_app(ctx))


def _form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no csrf_token field"
    return match.group(1)


# ---------------------------------------------------------------------------------------------------- CSRF


def test_browser_login_sets_no_cookie_a_script_can_read(api: TestClient, users: dict[Role, str]) -> None:
    response = api.post("/api/v1/auth/session", json={"username": users[Role.admin], "password": PASSWORD})
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    readable = [c.split("=")[0] for c in cookies if "httponly" not in c.lower() and "max-age=0" not in c.lower()]
    assert not readable, f"cookies a page script (an app's too) could read: {readable}"
    session = next(c for c in cookies if c.startswith("aiot_session="))
    assert "samesite=lax" in session.lower()


def test_a_csrf_cookie_chosen_by_the_attacker_is_no_token(api: TestClient, users: dict[Role, str]) -> None:
    """Double-submit lets whoever can write a cookie for the platform's host pass the check; a derived token
    does not."""
    assert api.post("/api/v1/auth/session", json={"username": users[Role.admin], "password": PASSWORD}).is_success
    api.cookies.set("aiot_csrf", "chosen-by-the-app")
    forged = api.post("/api/v1/users", json=NEW_USER, headers={"x-csrf-token": "chosen-by-the-app"})
    assert forged.status_code == 403, forged.text


# ------------------------------------------------------------------------------------------------ headers


def test_platform_answers_carry_security_headers(api: TestClient) -> None:
    for path in ("/login", "/api/v1/auth/me", "/static/app.js", "/healthz", "/nowhere"):  # page, API, file, error
        response = api.get(path, follow_redirects=False)
        csp = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-eval" not in csp, path
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0], path
        assert response.headers.get("x-frame-options") == "DENY", path
        assert response.headers.get("x-content-type-options") == "nosniff", path
        assert response.headers.get("referrer-policy") in ("same-origin", "no-referrer"), path


# ------------------------------------------------------------------------------------------ login throttle


def test_login_backs_off_with_429_and_the_right_password_works_after(
    database: Database, users: dict[Role, str], tmp_path: Path
) -> None:
    client = _client(
        database,
        tmp_path,
        login_free_failures=3,
        login_backoff_s=2.0,
        login_account_lock_max_s=2.0,
        login_address_lock_max_s=2.0,
    )
    wrong = {"username": users[Role.admin], "password": "not-the-password"}
    statuses = [client.post("/api/v1/auth/login", json=wrong).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 401], statuses  # the 4th failure starts the lock
    locked = client.post("/api/v1/auth/login", json={"username": users[Role.admin], "password": PASSWORD})
    assert locked.status_code == 429, locked.text  # even the right password waits out the lock
    assert int(locked.headers["retry-after"]) >= 1
    time.sleep(float(locked.headers["retry-after"]) + 0.1)
    assert (
        client.post("/api/v1/auth/login", json={"username": users[Role.admin], "password": PASSWORD}).status_code == 200
    )


def test_a_known_address_is_not_locked_out_of_its_account() -> None:
    from aiot.accounts.throttle import LoginThrottle, ThrottlePolicy

    now = [0.0]
    throttle = LoginThrottle(
        ThrottlePolicy(free_failures=2, backoff_s=10, account_max_s=60, address_max_s=3600), clock=lambda: now[0]
    )
    throttle.succeeded("admin", "10.0.0.1")  # the admin's usual address
    for _ in range(30):  # an attacker elsewhere hammers the admin account
        throttle.failed("admin", "192.0.2.66")
    assert throttle.retry_after("admin", "192.0.2.66") == 3600  # the guesser's address: long lock
    assert throttle.retry_after("admin", "10.0.0.1") == 0  # the admin, from home: not locked
    assert 0 < throttle.retry_after("admin", "198.51.100.7") <= 60  # a new address: short, capped lock
    now[0] += 61
    assert throttle.retry_after("admin", "198.51.100.7") == 0


def test_login_form_is_throttled_too(database: Database, users: dict[Role, str], tmp_path: Path) -> None:
    client = _client(database, tmp_path, login_free_failures=1, login_backoff_s=30)
    for _ in range(2):
        token = _form_token(client.get("/login").text)
        client.post("/login", data={"username": users[Role.end_user], "password": "wrong", "csrf_token": token})
    token = _form_token(client.get("/login").text)
    refused = client.post(
        "/login",
        data={"username": users[Role.end_user], "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "too many failed logins" in refused.text and "aiot_session" not in client.cookies


# ---------------------------------------------------------------------------------------------- login CSRF


def test_login_form_without_its_csrf_token_is_refused(api: TestClient, users: dict[Role, str]) -> None:
    form = {"username": users[Role.end_user], "password": PASSWORD}
    refused = api.post("/login", data=form, follow_redirects=False)
    assert refused.status_code == 403 and "aiot_session" not in api.cookies, refused.status_code
    assert "security token" in refused.text
    token = _form_token(api.get("/login").text)
    accepted = api.post("/login", data={**form, "csrf_token": token}, follow_redirects=False)
    assert accepted.status_code == 303 and "aiot_session" in api.cookies


def test_login_token_of_another_browser_is_refused(api: TestClient, users: dict[Role, str]) -> None:
    token = _form_token(api.get("/login").text)  # the attacker's own token...
    api.cookies.clear()  # ...sent from the victim's browser, which has another (or no) login cookie
    api.get("/login")
    form = {"username": users[Role.end_user], "password": PASSWORD, "csrf_token": token + "x"}
    assert api.post("/login", data=form, follow_redirects=False).status_code == 403


# ------------------------------------------------------------------------------------------------- metrics


def test_metrics_refuse_anonymous_callers_when_a_token_is_set(database: Database, tmp_path: Path) -> None:
    client = _client(database, tmp_path, metrics_token="scrape-secret-1")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
    assert scraped.status_code == 200 and "aiot_http_requests_total" in scraped.text


# ------------------------------------------------------------------------------------- apps origin gateway


@pytest.fixture
def apps(ctx: ServiceContext, api: TestClient) -> Iterator[TestClient]:
    from aiot.api.appsorigin import create_apps_app

    app = create_apps_app(ctx)
    api.app.state.apps_url = app.state.apps_url = "http://localhost:18081"  # type: ignore[attr-defined]
    app.state.platform_url = "http://testserver"
    with TestClient(app, base_url="http://localhost:18081", follow_redirects=False) as client:
        yield client


def _ids(database: Database) -> dict[str, str]:
    with database.session() as session:
        return {u.username: u.id for u in session.query(User)}


def _enter(api: TestClient, apps: TestClient, instance_id: str, headers: dict[str, str], path: str = "") -> str:
    """Open the app at the platform address; returns the ticket URL's path and query on the apps origin."""
    door = api.get(f"/apps/{instance_id}/{path}", headers=headers, follow_redirects=False)
    assert door.status_code == 303, door.text
    target = urlsplit(door.headers["location"])
    assert f"{target.scheme}://{target.netloc}" == "http://localhost:18081"
    return f"{target.path}?{target.query}"


def test_app_is_opened_on_the_apps_origin_with_a_one_time_ticket(
    api: TestClient, apps: TestClient, users: dict[Role, str], database: Database
) -> None:
    ids = _ids(database)
    owner = login(api, users[Role.end_user])
    with hostile_app("http://testserver", planted="aiot_session=planted-by-the-app") as evil:
        instance_id = running_web_instance(
            database,
            app_owner_id=ids[users[Role.app_developer]],
            instance_owner_id=ids[users[Role.end_user]],
            endpoint=evil.url,
        )
        ticket = _enter(api, apps, instance_id, owner, "page?x=1")
        entered = apps.get(ticket)
        assert entered.status_code == 303 and entered.headers["location"] == f"/{instance_id}/page?x=1"
        cookie = entered.headers["set-cookie"]
        assert cookie.startswith("aiot_app=") and f"Path=/{instance_id}/" in cookie
        assert "httponly" in cookie.lower() and owner["Authorization"].split(".")[-1] not in cookie
        assert apps.get(ticket).status_code == 403  # a ticket works once

        page = apps.get(f"/{instance_id}/page?x=1", headers={"Authorization": owner["Authorization"]})
        assert page.status_code == 200 and "Evil app" in page.text
        assert "set-cookie" not in page.headers and "www-authenticate" not in page.headers  # stripped
        assert page.headers["x-app-header"] == "kept" and page.headers["x-content-type-options"] == "nosniff"
        seen = evil.seen[-1]
        assert "cookie" not in seen and "authorization" not in seen, seen  # nothing of the viewer's goes on
        assert seen["x-forwarded-prefix"] == f"/{instance_id}" and seen[":path"] == "/page?x=1"

        # the cookie is for this instance only, and ends with the platform token it came from
        other = running_web_instance(
            database,
            app_owner_id=ids[users[Role.app_developer]],
            instance_owner_id=ids[users[Role.end_user]],
            endpoint=evil.url,
            name="other",
        )
        value = cookie.split(";")[0].split("=", 1)[1]
        assert apps.get(f"/{other}/", headers={"cookie": f"aiot_app={value}"}).status_code == 401
        assert api.post("/api/v1/auth/logout", headers=owner).status_code == 204
        assert apps.get(f"/{instance_id}/").status_code == 401


def test_only_the_owner_and_admins_get_a_ticket(
    api: TestClient, apps: TestClient, users: dict[Role, str], database: Database
) -> None:
    ids = _ids(database)
    with hostile_app("http://testserver") as evil:
        instance_id = running_web_instance(
            database,
            app_owner_id=ids[users[Role.app_developer]],
            instance_owner_id=ids[users[Role.end_user]],
            endpoint=evil.url,
        )
        for role in (Role.app_developer, Role.ai_developer):
            assert api.get(f"/apps/{instance_id}/", headers=login(api, users[role])).status_code == 404
        _enter(api, apps, instance_id, login(api, users[Role.admin]))
        anonymous = api.get(f"/apps/{instance_id}/", follow_redirects=False)  # a browser: log in first
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login?next=")
        assert apps.get(f"/{instance_id}/").status_code == 401  # no ticket, no entry
        assert apps.get("/_aiot/enter?ticket=forged.value").status_code == 403


def test_with_one_host_per_instance_an_app_is_served_only_on_its_own(
    ctx: ServiceContext, api: TestClient, users: dict[Role, str], database: Database
) -> None:
    from aiot.api.appsorigin import create_apps_app

    app = create_apps_app(ctx)
    api.app.state.apps_url = app.state.apps_url = "http://{instance}.apps.test:18081"  # type: ignore[attr-defined]
    ids = _ids(database)
    owner = login(api, users[Role.end_user])
    with hostile_app("http://testserver") as evil, TestClient(app, follow_redirects=False) as apps:
        mine, other = (
            running_web_instance(
                database,
                app_owner_id=ids[users[Role.app_developer]],
                instance_owner_id=ids[users[Role.end_user]],
                endpoint=evil.url,
                name=name,
            )
            for name in ("mine", "other")
        )
        host, other_host = (f"{i.lower().replace('_', '-')}.apps.test:18081" for i in (mine, other))
        ticket = api.get(f"/apps/{mine}/", headers=owner, follow_redirects=False).headers["location"]
        assert ticket.startswith(f"http://{host}/_aiot/enter?ticket="), ticket
        assert apps.get(ticket.replace(host, other_host)).status_code == 403  # not on another app's host
        ticket = api.get(f"/apps/{mine}/", headers=owner, follow_redirects=False).headers["location"]
        entered = apps.get(ticket)
        assert entered.status_code == 303
        assert apps.get(f"http://{host}/{mine}/").status_code == 200
        value = entered.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        smuggled = apps.get(f"http://{other_host}/{mine}/", headers={"cookie": f"aiot_app={value}"})
        assert smuggled.status_code == 401  # another app's host does not serve this one, even with its cookie
