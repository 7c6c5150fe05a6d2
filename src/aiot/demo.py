"""`aiot demo`: the seed's whole story on one machine, with one command.

Starts the control plane (embedded NATS + SQLite) with two local nodes, creates the four kinds of users, uploads
the sample device types, models and apps, registers two locations with simulated devices (granted to the end
user eve: end users see and bind only the locations an admin gave them), deploys the models,
starts intruder-alert and smart-classroom now and schedules smart-home for a window, then prints where to look.
Everything goes through the public REST API, as a person would; re-running on the same data directory reuses
what exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from aiot.artifacts.packing import zip_folder
from aiot.devices.simulators.links import Connection
from aiot.devices.simulators.runner import SIM_MODELS, SimDevice, run_simulators
from aiot.launch.control_plane import ControlPlane, StartupReport
from aiot.settings import Settings
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_PASSWORD = "demo-password"
USERS = [
    ("ada", "ai_developer", "ada@example.com"),
    ("dev", "app_developer", "dev@example.com"),
    ("eve", "end_user", "eve@example.com"),
]
LOCATIONS = {
    "Green Valley School": {
        "kind": "school",
        "timezone": "Asia/Kolkata",
        "devices": ["camera", "alarm", "display", "temperature", "light", "fan", "ac", "lamp"],
    },
    "Maple Street Home": {
        "kind": "home",
        "timezone": "America/New_York",
        "devices": ["temperature", "light", "fan", "ac", "lamp"],
    },
}


@dataclass
class DemoState:
    api_url: str
    admin_password: str
    sims: dict[str, list[SimDevice]] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


async def _call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    token: str | None,
    ok: tuple[int, ...] = (200, 201),
    **kwargs: Any,
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
    if response.status_code not in ok:
        raise DemoError(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
    return response


async def _login(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await _call(
        client, "POST", "/auth/login", None, json={"username": username, "password": password, "token_name": "demo"}
    )
    return response.json()["token"]


async def seed(client: httpx.AsyncClient, state: DemoState, tmp: Path) -> dict[str, str]:
    admin = await _login(client, "admin", state.admin_password)
    for username, role, email in USERS:
        await _call(
            client,
            "POST",
            "/users",
            admin,
            ok=(201, 409),
            json={"username": username, "password": DEMO_PASSWORD, "role": role, "email": email},
        )
    tokens = {"admin": admin, **{u: await _login(client, u, DEMO_PASSWORD) for u, _, _ in USERS}}
    for path in sorted((EXAMPLES / "device-types").glob("*.json")):
        await _call(
            client, "POST", "/device-types", admin, content=path.read_bytes(), headers={"X-Filename": path.name}
        )
    for collection, folder, who in (
        ("models", "models/face-detector", "ada"),
        ("models", "models/comfort", "ada"),
        ("apps", "apps/intruder-alert", "dev"),
        ("apps", "apps/smart-classroom", "dev"),
        ("apps", "apps/smart-home", "dev"),
    ):
        archive = zip_folder(EXAMPLES / folder, tmp / (folder.replace("/", "-") + ".zip"))
        await _call(
            client,
            "POST",
            f"/{collection}",
            tokens[who],
            content=archive.read_bytes(),
            headers={"Content-Type": "application/zip"},
        )
    for model in ("face-detector", "comfort"):
        await _call(client, "POST", f"/models/{model}/deploy", tokens["ada"], json={"replicas": 1})
    existing = {loc["name"] for loc in (await _call(client, "GET", "/locations", admin)).json()}
    for name, spec in LOCATIONS.items():
        if name not in existing:
            await _call(
                client,
                "POST",
                "/locations",
                admin,
                json={"name": name, "kind": spec["kind"], "timezone": spec["timezone"]},
            )
        place = (await _call(client, "GET", f"/locations/{name}", admin)).json()
        have = {d["name"]: d for d in place["devices"]}
        sims = []
        for type_name in spec["devices"]:
            device_name = f"{type_name}-1"
            if device_name in have:
                connect = (
                    await _call(client, "POST", f"/devices/{have[device_name]['id']}/credentials/rotate", admin)
                ).json()
            else:
                connect = (
                    await _call(
                        client,
                        "POST",
                        "/devices",
                        admin,
                        json={"name": device_name, "device_type": type_name, "location": name},
                    )
                ).json()["connect"]
            if type_name in SIM_MODELS:
                options = {"scene": "mixed"} if type_name == "camera" else {}
                sims.append(
                    SimDevice(
                        device_id=connect["username"],
                        model=type_name,
                        options=options,
                        connection=Connection(
                            nats_url=connect["nats_url"], username=connect["username"], password=connect["password"]
                        ),
                    )
                )
        state.sims[name] = sims
        # eve runs her apps only where an admin gave her the place (201 the first time, 200 on a re-run)
        await _call(client, "POST", f"/locations/{name}/grants", admin, json={"user": "eve"})
    return tokens


async def start_apps(client: httpx.AsyncClient, state: DemoState, tokens: dict[str, str]) -> None:
    eve = tokens["eve"]
    mine = {
        (i["app"].split(":")[0], i["location_id"]): i for i in (await _call(client, "GET", "/instances", eve)).json()
    }
    locations = {loc["name"]: loc["id"] for loc in (await _call(client, "GET", "/locations", eve)).json()}
    plan = [
        ("intruder-alert", "Green Valley School"),
        ("smart-classroom", "Green Valley School"),
        ("smart-home", "Maple Street Home"),
    ]
    for app, location in plan:
        instance = mine.get((app, locations[location]))
        if instance is None:
            instance = (await _call(client, "POST", "/instances", eve, json={"app": app, "location": location})).json()
        state.instances[app] = instance["id"]
    for app in ("intruder-alert", "smart-classroom"):
        await _call(client, "POST", f"/instances/{state.instances[app]}/run", eve, json={"minutes": 24 * 60})
    # smart-home runs by schedule: a window starting in a minute, in the home's own time zone.
    tz = ZoneInfo(LOCATIONS["Maple Street Home"]["timezone"])
    start = (utcnow() + timedelta(minutes=1)).astimezone(tz)
    spec = {
        "timezone": str(tz),
        "start_date": start.date().isoformat(),
        "end_date": (start.date() + timedelta(days=7)).isoformat(),
        "times": [start.strftime("%H:%M")],
        "duration_minutes": 120,
    }
    response = await client.post(
        "/api/v1/schedules",
        headers={"Authorization": f"Bearer {eve}"},
        json={"app_instance_id": state.instances["smart-home"], "spec": spec},
    )
    if response.status_code in (200, 201):
        state.notes.append(
            f"smart-home is scheduled daily at {spec['times'][0]} {tz} for 2 hours (first run in about a minute)"
        )
    else:
        await _call(client, "POST", f"/instances/{state.instances['smart-home']}/run", eve, json={"minutes": 120})
        state.notes.append(f"smart-home runs now for 2 hours (scheduling answered {response.status_code})")


def print_summary(state: DemoState, report: StartupReport, console: Any) -> None:
    url = state.api_url
    console.print(f"\n[bold green]AIoT demo running[/] at [link]{url}[/]  (API docs: {url}/docs)")
    console.print(
        f"  admin / {state.admin_password}   ada (AI developer), dev (app developer), eve (end user): "
        f"password {DEMO_PASSWORD}"
    )
    for name, sims in state.sims.items():
        console.print(f"  {name}: {len(sims)} simulated devices ({', '.join(s.model for s in sims)})")
    for app, instance in state.instances.items():
        console.print(f"  {app}: {url}/apps/{instance}/  (instance {instance})")
    for note in state.notes:
        console.print(f"  {note}")
    console.print(
        "What to watch: the web UI; `aiot instance ls`, `aiot workloads ls`, `aiot node ls`; the alarm "
        "controller switching on when the camera sees a face (`aiot device latest <alarm id>`); the fan "
        "following the classroom temperature; e-mails in the outbox (GET /api/v1/outbox)."
    )
    console.print("Ctrl+C stops everything.")


async def run_demo(settings: Settings, console: Any, ready: asyncio.Event | None = None) -> None:
    if settings.nodes <= 0:
        settings = settings.model_copy(update={"nodes": 2})
    if settings.admin_password is None:
        from pydantic import SecretStr

        settings = settings.model_copy(update={"admin_password": SecretStr("admin-" + DEMO_PASSWORD)})
    plane = ControlPlane(settings)
    report = await plane.start()
    assert report.api_url is not None
    state = DemoState(api_url=report.api_url, admin_password=settings.admin_password.get_secret_value())
    sim_tasks: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=report.api_url, timeout=60) as client:
            with tempfile.TemporaryDirectory(prefix="aiot-demo-") as tmp:
                tokens = await seed(client, state, Path(tmp))
            for name, sims in state.sims.items():
                tz = LOCATIONS[name]["timezone"]
                sim_tasks.append(asyncio.create_task(run_simulators(sims, tz=tz, stop=stop), name=f"sim-{name}"))
            await start_apps(client, state, tokens)
        print_summary(state, report, console)
        if ready is not None:
            ready.set()
        await plane.run_until_signalled()
    finally:
        stop.set()
        for task in sim_tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await plane.stop()
