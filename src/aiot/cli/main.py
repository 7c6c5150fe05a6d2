"""The `aiot` command: one entry point for people (login, users, status) and for running the platform."""

from __future__ import annotations

import sys

import click
import typer

from aiot import __version__
from aiot.cli import credentials, devices, legacy, logs, nats, node, packages, runtime, server, store, users
from aiot.cli.client import ApiClient, CliError
from aiot.cli.output import AS_JSON, OUTPUT, Output, console, emit, err_console

app = typer.Typer(help="AIoT platform command line.", no_args_is_help=True, pretty_exceptions_enable=False)
app.command("up")(server.up)
app.command("demo")(server.demo)
app.command("import")(legacy.import_command)
app.add_typer(server.db_app, name="db")
app.add_typer(server.service_app, name="service")
app.add_typer(users.app, name="users")
app.add_typer(packages.model_app, name="model")
app.add_typer(packages.app_app, name="app")
app.add_typer(packages.device_type_app, name="device-type")
app.add_typer(devices.location_app, name="location")
app.add_typer(devices.device_app, name="device")
app.add_typer(devices.sim_app, name="sim")
app.add_typer(node.node_app, name="node")
app.add_typer(nats.nats_app, name="nats")
app.add_typer(store.store_app, name="store")
node.node_app.command("token")(runtime.node_token)
node.node_app.command("ls")(runtime.nodes_ls)
node.node_app.command("drain")(runtime.nodes_drain)
node.node_app.command("revoke")(runtime.nodes_revoke)
app.add_typer(runtime.workloads_app, name="workloads")
app.add_typer(runtime.instance_app, name="instance")
packages.model_app.command("deploy")(runtime.deploy_model)
packages.model_app.command("endpoints")(runtime.model_endpoints)
packages.model_app.command("predict")(runtime.model_predict)
packages.model_app.command("rollout")(runtime.model_rollout)
packages.model_app.command("rollback")(runtime.model_rollback)
packages.model_app.command("history")(runtime.model_history)
app.command("logs")(logs.logs)


@app.command()
def version() -> None:
    """Print the platform version."""
    console.print(__version__)


@app.command()
def login(
    server_url: str = typer.Option(None, "--server", help="Control plane URL (AIOT_SERVER)."),
    username: str = typer.Option(..., prompt=True),
    password: str = typer.Option(..., prompt=True, hide_input=True),
) -> None:
    """Log in and keep the token for later commands."""
    client = ApiClient(server=server_url, token="")
    out = client.post("/auth/login", json={"username": username, "password": password, "token_name": "cli"}, auth=False)
    path = credentials.save(client.server, out["token"])
    console.print(
        f"logged in to {client.server} as {out['user']['username']} ({out['user']['role']}); token kept in {path}"
    )


@app.command()
def logout() -> None:
    """Revoke the kept token and forget it."""
    client = ApiClient()
    client.post("/auth/logout")
    credentials.save(client.server, None)
    console.print("logged out")


@app.command()
def password(
    current: str = typer.Option(..., prompt="Current password", hide_input=True),
    new: str = typer.Option(..., prompt="New password", hide_input=True, confirmation_prompt=True),
) -> None:
    """Change your own password (all your tokens are revoked; log in again)."""
    ApiClient().post("/auth/password", json={"current_password": current, "new_password": new})
    console.print("password changed; run `aiot login` again")


@app.command()
def status(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    """Show the control plane's version, database, NATS and services."""
    data = ApiClient().get("/status")
    if as_json or output != Output.table:
        emit(data, output, as_json=as_json)
        return
    console.print(f"version {data['version']}")
    console.print(f"database: {'ok' if data['database']['ok'] else 'DOWN'} ({data['database'].get('backend')})")
    console.print(f"nats: {'ok' if data['nats']['ok'] else 'DOWN'}")
    for name, health in data["services"].items():
        console.print(f"  {name}: {health['state']} {health.get('detail', '')}")


def main() -> None:
    """Entry point that prints CliError as one line (no traceback)."""
    try:
        result = app(standalone_mode=False)
    except CliError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
