"""Every `aiot` command starts by importing the CLI; what the server side needs (the database layer, the web
framework, the package converter, the NATS client) is imported only by the commands that use it.

Before, `aiot users ...` pulled in the database models for the role names and `aiot import` the converter, so
every command, `aiot model ls` included, spent about half a second importing them (1.0-1.25 s a command; now
0.5-0.7 s). Measured as imports, not time, so the test cannot flake on a busy machine.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "fastapi", "aiot.store", "aiot.artifacts.legacy", "nats")


def test_the_cli_imports_no_server_side_module_at_start() -> None:
    probe = f"import sys, aiot.cli.main; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
