"""Where `aiot login` keeps the server URL and token: `~/.config/aiot/credentials.json`, mode 0600.

`AIOT_SERVER` and `AIOT_TOKEN` override the file, so scripts and CI need no file at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8080"


def credentials_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "aiot" / "credentials.json"


@dataclass
class Credentials:
    server: str
    token: str | None


def load() -> Credentials:
    stored: dict[str, str] = {}
    path = credentials_path()
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
    server = os.environ.get("AIOT_SERVER") or stored.get("server") or DEFAULT_SERVER
    token = os.environ.get("AIOT_TOKEN") or (stored.get("token") if stored.get("server") == server else None)
    return Credentials(server=server.rstrip("/"), token=token)


def save(server: str, token: str | None) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"server": server.rstrip("/"), "token": token}, handle)
    os.replace(tmp, path)
    return path
