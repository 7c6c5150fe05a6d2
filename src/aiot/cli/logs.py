"""`aiot logs`: search the central log, or follow it live (`-f`), with the API's filters.

The search is `GET /api/v1/logs` (newest first); `-f` reads the server-sent events of `GET /api/v1/logs/stream`
(one `event: log` per new matching line) until Ctrl-C. `-o json` prints the API's records (with `-f`, one JSON
object per line, for `jq`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer

from aiot.cli.client import ApiClient, CliError
from aiot.cli.output import OUTPUT, Output, console, emit


def _line(record: dict[str, Any]) -> str:
    who = record.get("workload_id") or record.get("service") or ""
    return f"{record.get('ts', '')} {record.get('level', ''):<7} {who} {record.get('message', '')}"


def logs(
    workload: str | None = typer.Option(None, "--workload", "-w", help="a workload id (wl_...)"),
    instance: str | None = typer.Option(None, "--instance", "-i", help="an app instance id (ins_...)"),
    service: str | None = typer.Option(None, "--service", "-s", help="a platform service, e.g. deployer"),
    level: str | None = typer.Option(None, "--level", "-l", help="minimum level: DEBUG, INFO, WARNING, ERROR"),
    grep: str | None = typer.Option(None, "--grep", "-g", help="case-insensitive text the message contains"),
    since: str | None = typer.Option(None, help="ISO time or a duration ago: 15m, 2h, 7d (search only)"),
    limit: int = typer.Option(200, min=1, max=5000, help="lines at most (search only)"),
    follow: bool = typer.Option(False, "--follow", "-f", help="print new lines as they come, until Ctrl-C"),
    output: Output = OUTPUT,
) -> None:
    """Search the platform's central log (newest first), or follow it with -f."""
    filters = {"workload_id": workload, "app_instance_id": instance, "service": service, "level": level, "text": grep}
    params = {k: v for k, v in filters.items() if v}
    client = ApiClient()
    if follow:
        _follow(client, params, output)
        return
    found = client.get(
        "/logs", params={**params, "since": since, "limit": limit} if since else {**params, "limit": limit}
    )
    records = found.get("records", []) if isinstance(found, dict) else found
    if output != Output.table:
        emit(found, output)
        return
    for record in records:
        console.print(_line(record), markup=False, highlight=False)
    if isinstance(found, dict) and found.get("truncated"):
        console.print("[dim](search stopped early: narrow it with --since or filters)[/]")


def _follow(client: ApiClient, params: dict[str, str], output: Output) -> None:
    url = f"{client.server}/api/v1/logs/stream"
    headers = {"Authorization": f"Bearer {client.token}", "Accept": "text/event-stream"}
    if not client.token:
        raise CliError(f"not logged in to {client.server}: run `aiot login` first")
    try:
        with httpx.stream("GET", url, params=params, headers=headers, timeout=httpx.Timeout(10.0, read=None)) as r:
            if r.status_code >= 400:
                r.read()
                raise CliError(f"{r.status_code}: {r.text[:300]}")
            event = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("log", ""):
                    record = json.loads(line[5:])
                    if output == Output.table:
                        console.print(_line(record), markup=False, highlight=False)
                    else:
                        typer.echo(json.dumps(record))
                elif not line:
                    event = ""
    except KeyboardInterrupt:
        return
    except httpx.HTTPError as exc:
        raise CliError(f"the live tail at {client.server} stopped: {exc}") from exc
