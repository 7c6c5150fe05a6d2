"""`aiot model deploy`, `aiot nodes ...`, `aiot workloads ...`, `aiot instance ...`: the running side."""

from __future__ import annotations

import json

import typer

from aiot.cli.client import ApiClient, CliError
from aiot.cli.output import AS_JSON, OUTPUT, Output, console, emit

workloads_app = typer.Typer(help="Workloads: model replicas and app instances as processes.", no_args_is_help=True)
instance_app = typer.Typer(
    help="App instances (end users): bind an app at a location and run it.", no_args_is_help=True
)


def deploy_model(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or model id"),
    replicas: int = typer.Option(1, min=1, max=32),
) -> None:
    """Serve a model as an HTTP endpoint with N replicas (resizes an existing deployment)."""
    out = ApiClient().post(f"/models/{ref}/deploy", json={"replicas": replicas})
    console.print(
        f"model {out['model']} ({out['model_id']}): {out['replicas']} replica(s) requested as "
        f"deployment {out['id']}; endpoints appear in `aiot model endpoints {ref}` once running"
    )


def model_endpoints(ref: str, output: Output = OUTPUT) -> None:
    out = ApiClient().get(f"/deployments/{ref}")
    emit(
        out,
        output,
        ("id", "node_id", "state", "endpoint", "restarts"),
        title=out["model"],
        table_rows=lambda d: d["workloads"],
    )


def node_token(
    uses: int = typer.Option(1, "--uses", min=1, help="Registrations the token allows."),
    ttl_minutes: float = typer.Option(
        None, "--ttl-minutes", min=0.1, help="Lifetime (default: the join_token_ttl_minutes setting, 60)."
    ),
) -> None:
    """Print a join token (admin): single-use and valid 1 h by default. Give it to the node in a 0600 file
    (`aiot node join --token-file FILE`) or AIOT_JOIN_TOKEN, never on a command line."""
    out = ApiClient().post("/nodes/join-tokens", json={"uses": uses, "ttl_minutes": ttl_minutes})
    console.print(out["token"])


def nodes_revoke(node: str) -> None:
    """Cut a node off: its token and NATS user stop working and its workloads move to other nodes."""
    out = ApiClient().post(f"/nodes/{node}/revoke")
    moved = out.get("moved_workloads") or []
    console.print(f"{out['name']} ({out['id']}) revoked; {len(moved)} workload(s) moved to other nodes")


def _node_rows(rows: list[dict]) -> list[dict]:
    shown = []
    for row in rows:
        load = row.get("load") or {}
        shown.append(
            {
                **row,
                "cpu%": load.get("cpu_percent"),
                "mem%": load.get("memory_percent"),
                "sandbox": {True: "yes", False: "NO"}.get(load.get("sandboxed"), "?"),
                "workloads#": len(row.get("workloads", [])),
            }
        )
    return shown


def nodes_ls(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    emit(
        ApiClient().get("/nodes"),
        output,
        ("id", "name", "status", "cpu%", "mem%", "workloads#", "sandbox", "report_age_s"),
        table_rows=_node_rows,
        as_json=as_json,
    )


def nodes_drain(node: str) -> None:
    ApiClient().post(f"/nodes/{node}/drain")
    console.print(f"{node} draining: its workloads move to other nodes")


@workloads_app.command("ls")
def workloads_ls(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    emit(
        ApiClient().get("/workloads"),
        output,
        ("id", "kind", "package_id", "node_id", "state", "restarts", "endpoint"),
        as_json=as_json,
    )


@workloads_app.command("show")
def workloads_show(workload_id: str, output: Output = OUTPUT) -> None:
    emit(ApiClient().get(f"/workloads/{workload_id}"), output)


@instance_app.command("create")
def instance_create(
    app: str,
    location: str = typer.Option(..., "--location"),
    bind: list[str] = typer.Option([], help="alias=dev_id[,dev_id] when ambiguous"),
    setting: list[str] = typer.Option([], help="name=JSON value"),
    output: Output = OUTPUT,
) -> None:
    bindings = {}
    for item in bind:
        alias, _, ids = item.partition("=")
        if not ids:
            raise CliError(f"--bind {item!r}: expected alias=dev_id[,dev_id]")
        bindings[alias] = ids.split(",")
    settings = {}
    for item in setting:
        name, _, value = item.partition("=")
        try:
            settings[name] = json.loads(value)
        except ValueError:
            settings[name] = value
    out = ApiClient().post(
        "/instances", json={"app": app, "location": location, "bindings": bindings, "settings": settings}
    )
    if output != Output.table:
        emit(out, output)
        return
    console.print(f"app instance [bold]{out['id']}[/] ({out['app']}) bound: {json.dumps(out['bindings'])}")


@instance_app.command("ls")
def instance_ls(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    emit(
        ApiClient().get("/instances"),
        output,
        ("id", "app", "state", "workload_state", "address", "run_until"),
        as_json=as_json,
    )


@instance_app.command("run")
def instance_run(instance_id: str, minutes: float | None = typer.Option(None)) -> None:
    """Run the instance now (for MINUTES, or until stopped)."""
    out = ApiClient().post(f"/instances/{instance_id}/run", json={"minutes": minutes})
    console.print(f"{out['id']} starting; its address is mailed to you once it runs")


@instance_app.command("stop")
def instance_stop(instance_id: str) -> None:
    ApiClient().post(f"/instances/{instance_id}/stop")
    console.print(f"{instance_id} stopped")


ROLLOUT_COLUMNS = ("id", "from_version", "to_version", "state", "reason", "started_at", "finished_at")


def _show_change(out: dict, output: Output, what: str, history: str) -> None:
    """A started upgrade/rollout (or a rollback) as the API's document, or one line saying where it goes."""
    if output.value != "table":
        emit(out, output)
    elif out["manual_rollback"]:
        back_to = out["from_version"] if out["state"] == "rolled_back" else out["to_version"]
        console.print(f"{what}: back to {back_to} ({out['id']})")
    else:
        console.print(f"{what}: {out['from_version']} -> {out['to_version']} ({out['id']}); watch it with `{history}`")


@instance_app.command("upgrade")
def instance_upgrade(
    instance_id: str, version: str = typer.Option(..., "--version", help="e.g. 1.2.0"), output: Output = OUTPUT
) -> None:
    """Move the instance to another version of its app; rolled back by itself if the new one fails."""
    _show_change(
        ApiClient().post(f"/instances/{instance_id}/upgrade", json={"version": version}),
        output,
        instance_id,
        f"aiot instance history {instance_id}",
    )


@instance_app.command("rollback")
def instance_rollback(instance_id: str, output: Output = OUTPUT) -> None:
    """Back to the version the latest upgrade replaced."""
    _show_change(
        ApiClient().post(f"/instances/{instance_id}/rollback"),
        output,
        instance_id,
        f"aiot instance history {instance_id}",
    )


@instance_app.command("history")
def instance_history(instance_id: str, output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    """Every version change of the instance with its outcome, oldest first."""
    emit(ApiClient().get(f"/instances/{instance_id}/history"), output, ROLLOUT_COLUMNS, as_json=as_json)


def model_rollout(
    name: str, version: str = typer.Option(..., "--version", help="e.g. 1.1.0"), output: Output = OUTPUT
) -> None:
    """Serve another version of the model: its replicas replace the current ones one by one; rolled back by
    itself if a new replica fails."""
    _show_change(
        ApiClient().post(f"/models/{name}/rollout", json={"version": version}),
        output,
        f"model {name}",
        f"aiot model history {name}",
    )


def model_rollback(name: str, output: Output = OUTPUT) -> None:
    """Undo the rollout in progress, or go back to the version the last rollout replaced."""
    _show_change(ApiClient().post(f"/models/{name}/rollback"), output, f"model {name}", f"aiot model history {name}")


def model_history(name: str, output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    """Every rollout of the model with its outcome, oldest first."""
    emit(ApiClient().get(f"/models/{name}/rollouts"), output, ROLLOUT_COLUMNS, as_json=as_json)


def model_predict(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or owner/NAME"),
    inputs: str = typer.Option(..., "--input", "-i", help="the inputs as JSON, e.g. '{\"temperature\": 31}'"),
    output: Output = OUTPUT,
) -> None:
    """One prediction through the model gateway's stable URL (/models/<owner>/<name>/v1/predict): the highest
    version with a ready replica, or the version given."""
    try:
        parsed = json.loads(inputs)
    except ValueError as exc:
        raise CliError(f"--input is not JSON ({exc}); give an object of the model's inputs") from None
    client = ApiClient()
    model = client.get(f"/models/{ref}")
    url = f"{client.server}/models/{model['owner']}/{model['name']}/v1/predict"
    pinned = ":" in ref.split("/")[-1]
    answer = client.request(
        "POST", url, json={"inputs": parsed}, params={"version": model["version"]} if pinned else None
    )
    emit(answer, output)
