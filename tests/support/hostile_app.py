"""A hostile web app for gateway tests: a real HTTP server (as a node would run it) whose page's script tries to
act as the viewer on the platform, which sets cookies, and which records the headers it was sent.

The app runs as an instance in the database (package, instance, workload and a "running" status with this
server's endpoint), so the platform's gateway treats it exactly like an app a node runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage
from aiot.store.devices import Location
from aiot.store.engine import Database
from aiot.store.runtime import Workload, WorkloadKind, WorkloadStatus

ATTACK_SCRIPT = """
(async () => {
  const out = {cookie: document.cookie};
  const csrf = (document.cookie.match(/aiot_csrf=([^;]+)/) || [])[1] || "";
  const body = JSON.stringify({username: "mallory", password: "mallory-password-1", role: "admin"});
  const post = async (url, extra) => {
    try {
      const r = await fetch(url, Object.assign({method: "POST", credentials: "include", body: body,
        headers: {"content-type": "application/json", "x-csrf-token": csrf}}, extra || {}));
      return r.status;
    } catch (e) { return String(e); }
  };
  out.relative = await post("/api/v1/users");
  out.platform = await post(PLATFORM + "/api/v1/users");
  out.simple = await post(PLATFORM + "/api/v1/users", {mode: "no-cors", headers: {"content-type": "text/plain"}});
  document.getElementById("out").textContent = JSON.stringify(out);
  document.title = "done";
})();
"""


@dataclass
class HostileApp:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def hostile_app(platform_url: str, planted: str = "app_planted=1") -> Iterator[HostileApp]:
    """Serve the hostile app on a free loopback port for the duration of the block; its answers set the
    cookies `planted` (e.g. "aiot_session=x" to clobber the platform's) and `app_tracking=1`."""
    app = HostileApp(url="")
    page = (
        f"<!doctype html><title>evil</title><h1>Evil app</h1><pre id='out'>running</pre>"
        f"<script>const PLATFORM = {json.dumps(platform_url)};{ATTACK_SCRIPT}</script>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            app.seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("set-cookie", f"{planted}; Path=/")
            self.send_header("set-cookie", "app_tracking=1; Path=/")
            self.send_header("www-authenticate", "Basic realm=app")
            self.send_header("x-app-header", "kept")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(page)

        do_GET = do_POST = do_HEAD = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    app.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        server.shutdown()
        server.server_close()


def running_web_instance(
    db: Database, *, app_owner_id: str, instance_owner_id: str, endpoint: str, name: str = "evil-app", kind: str = "web"
) -> str:
    """A web app instance whose workload runs at `endpoint`; returns the instance id."""
    with db.session() as session:
        location = Location(name=f"{name}-site")
        package = AppPackage(
            name=name, version="1.0.0", sha256="0" * 64, size=1, manifest={}, kind=kind, owner_id=app_owner_id
        )
        session.add_all([location, package])
        session.flush()
        instance = AppInstance(
            app_id=package.id,
            location_id=location.id,
            owner_id=instance_owner_id,
            name=name,
            state=InstanceState.running,
        )
        session.add(instance)
        session.flush()
        workload = Workload(
            kind=WorkloadKind.app,
            package_id=package.id,
            package_sha256="0" * 64,
            owner_id=instance_owner_id,
            group_id=instance.id,
            generation=1,
            nats_password_bcrypt="x",
        )
        session.add(workload)
        session.flush()
        session.add(WorkloadStatus(workload_id=workload.id, generation=1, state="running", endpoint=endpoint))
        instance.workload_id = workload.id
        return instance.id
