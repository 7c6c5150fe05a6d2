"""`aiot users ...`: user administration through the API (admins)."""

from __future__ import annotations

import typer

from aiot.cli.client import ApiClient
from aiot.cli.output import AS_JSON, OUTPUT, Output, console, emit
from aiot.roles import Role

app = typer.Typer(help="Manage users and roles (admin).", no_args_is_help=True)
COLUMNS = ("id", "username", "role", "email", "disabled", "created_at")


@app.command("ls")
def list_users(
    role: Role | None = typer.Option(None, help="Only this role."), output: Output = OUTPUT, as_json: bool = AS_JSON
) -> None:
    rows = ApiClient().get("/users", params={"role": role.value} if role else None)
    emit(rows, output, COLUMNS, title="users", as_json=as_json)


@app.command("add")
def add_user(
    username: str,
    role: Role = typer.Option(..., help="admin, ai_developer, app_developer or end_user"),
    email: str | None = typer.Option(None),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    output: Output = OUTPUT,
) -> None:
    user = ApiClient().post(
        "/users", json={"username": username, "role": role.value, "email": email, "password": password}
    )
    if output != Output.table:
        emit(user, output)
        return
    console.print(f"created [bold]{user['username']}[/] ({user['id']}, {user['role']})")


@app.command("set-role")
def set_role(user: str, role: Role) -> None:
    updated = ApiClient().patch(f"/users/{user}", json={"role": role.value})
    console.print(f"{updated['username']} is now {updated['role']}")


@app.command("disable")
def disable(user: str) -> None:
    updated = ApiClient().patch(f"/users/{user}", json={"disabled": True})
    console.print(f"{updated['username']} disabled; their tokens are revoked")


@app.command("enable")
def enable(user: str) -> None:
    updated = ApiClient().patch(f"/users/{user}", json={"disabled": False})
    console.print(f"{updated['username']} enabled")


@app.command("reset-password")
def reset_password(
    user: str, password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True)
) -> None:
    updated = ApiClient().patch(f"/users/{user}", json={"password": password})
    console.print(f"password of {updated['username']} reset; their tokens are revoked")
