"""Smart home web app: pages with the latest readings and buttons that switch the controllers.

Entrypoint "home:main". Served by the standard library's ThreadingHTTPServer on the port the platform gives
in the PORT environment variable (the manifest's `port`, 8000, when unset). Readings arrive through
`@on_reading` callbacks run by `run()` in the main thread; the HTTP server runs in a daemon thread.

Pages: `/` (readings and switches), `/history` (recent readings), `/api/state` (JSON), `/healthz`.
"""

from __future__ import annotations

import html
import json
import os
import threading
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from platform_sdk import controller, get_logger, on_reading, run, sensor, settings

log = get_logger()
SENSORS = {"temperature": ("temperature", "°C"), "light": ("illuminance", "lx")}
"""Sensor alias -> (value name in its readings, unit)."""
CONTROLLERS = {"fan": ("on", "off"), "ac": ("on", "off"), "lamp": ("on", "off")}
"""Controller alias -> the commands offered as buttons."""

_lock = threading.Lock()
latest: dict[str, dict[str, Any]] = {}
history: deque[dict[str, Any]] = deque(maxlen=int(settings().get("history_size", 50)))
states: dict[str, Any] = {}


def _record(alias: str, reading) -> None:
    key, unit = SENSORS[alias]
    entry = {
        "sensor": alias,
        "device": reading.device_id,
        "value": reading.values.get(key),
        "unit": unit,
        "ts": _ts(reading.ts),
    }
    with _lock:
        latest[alias] = entry
        history.appendleft(entry)


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return str(value)


@on_reading("temperature")
def on_temperature(reading) -> None:
    _record("temperature", reading)


@on_reading("light")
def on_light(reading) -> None:
    _record("light", reading)


def switch(alias: str, command: str) -> Any:
    """Send a command to a controller and remember the state it acknowledges."""
    if alias not in CONTROLLERS or command not in CONTROLLERS[alias]:
        raise ValueError(f"unknown control {alias}/{command}")
    new_state = controller(alias).send(command)
    with _lock:
        states[alias] = new_state
    log.info("%s -> %s: %s", alias, command, new_state)
    return new_state


# --------------------------------------------------------------------------- pages

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 42rem; color: #222; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .4rem; border-bottom: 1px solid #ddd; }
.value { font-size: 1.6rem; } form { display: inline; } button { padding: .3rem .9rem; margin-right: .3rem; }
nav a { margin-right: 1rem; }
"""


def _page(title: str, body: str) -> bytes:
    site = html.escape(str(settings().get("title", "My home")))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} - {site}</title><style>{STYLE}</style></head><body>"
        f"<nav><a href='./'>Home</a><a href='history'>History</a></nav><h1>{site}</h1>{body}</body></html>"
    ).encode()


def _home_page() -> bytes:
    with _lock:
        readings, current = dict(latest), dict(states)
    rows = []
    for alias, (_, unit) in SENSORS.items():
        entry = readings.get(alias)
        value = "no reading yet" if entry is None else f"{entry['value']} {unit}"
        when = "" if entry is None else entry["ts"]
        rows.append(
            f"<tr><th>{alias}</th><td class='value'>{html.escape(str(value))}</td><td>{html.escape(when)}</td></tr>"
        )
    switches = []
    for alias, commands in CONTROLLERS.items():
        buttons = "".join(
            f"<form method='post' action='control'><input type='hidden' name='alias' value='{alias}'>"
            f"<button name='command' value='{cmd}'>{cmd}</button></form>"
            for cmd in commands
        )
        state = html.escape(json.dumps(current.get(alias, "unknown")))
        switches.append(f"<tr><th>{alias}</th><td>{buttons}</td><td><code>{state}</code></td></tr>")
    body = (
        "<h2>Readings</h2><table>" + "".join(rows) + "</table>"
        "<h2>Switches</h2><table>" + "".join(switches) + "</table>"
        "<p><small>Refresh the page for new readings.</small></p>"
    )
    return _page("Home", body)


def _history_page() -> bytes:
    with _lock:
        entries = list(history)
    rows = "".join(
        f"<tr><td>{html.escape(e['ts'])}</td><td>{html.escape(e['sensor'])}</td>"
        f"<td>{html.escape(str(e['value']))} {html.escape(e['unit'])}</td><td>{html.escape(str(e['device']))}</td></tr>"
        for e in entries
    )
    return _page(
        "History",
        "<h2>Recent readings</h2><table><tr><th>time (UTC)</th><th>sensor</th><th>value</th>"
        f"<th>device</th></tr>{rows}</table>",
    )


class Handler(BaseHTTPRequestHandler):
    """Routes the few pages; everything else is a 404."""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path == "/":
            self._send(200, _home_page())
        elif self.path == "/history":
            self._send(200, _history_page())
        elif self.path == "/api/state":
            with _lock:
                payload = {"readings": latest, "controllers": states}
            self._send(200, json.dumps(payload, default=str).encode(), "application/json")
        elif self.path == "/healthz":
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, _page("Not found", "<p>No such page.</p>"))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/control":
            self._send(404, _page("Not found", "<p>No such page.</p>"))
            return
        length = min(int(self.headers.get("Content-Length") or 0), 4096)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        alias, command = form.get("alias", [""])[0], form.get("command", [""])[0]
        try:
            switch(alias, command)
        except ValueError as exc:
            self._send(400, _page("Bad request", f"<p>{html.escape(str(exc))}</p>"))
            return
        self.send_response(303)
        self.send_header("Location", "./")  # relative: right behind the apps origin's /<instance>/ too
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server signature
        log.debug("http: " + format, *args)


def main() -> None:
    """Serve the pages in a thread, prime the readings, then run the SDK's callbacks until stopped."""
    for alias, (key, _) in SENSORS.items():
        reading = sensor(alias).latest()
        if reading is not None and key in reading.values:
            _record(alias, reading)
    port = int(os.environ.get("PORT") or 8000)
    server = ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("smart home serving on port %d", port)
    try:
        run()
    finally:
        server.shutdown()
