"""`aiot nats ...`: what an external NATS server needs to hand authentication to the platform."""

from __future__ import annotations

import typer

from aiot.cli.output import console, err_console

nats_app = typer.Typer(help="The platform's NATS servers.", no_args_is_help=True)


@nats_app.command("callout-config")
def callout_config() -> None:
    """Print the nats-server configuration block for auth callout (same on every server of the cluster).

    Reads AIOT_NATS_USER / AIOT_NATS_PASSWORD (the platform's own user), AIOT_SECRET_KEY (from which the callout
    issuer key is derived; the same on every platform process) and, optionally, AIOT_NATS_SYSTEM_USER /
    AIOT_NATS_SYSTEM_PASSWORD. Prints bcrypt hashes, never the passwords. Then set AIOT_NATS_CALLOUT=true."""
    from aiot.bus import nkey_jwt
    from aiot.bus.auth import hash_password
    from aiot.bus.callout import server_config
    from aiot.secrets_store import platform_secret
    from aiot.settings import load_settings

    settings = load_settings()
    if not settings.nats_user or settings.nats_password is None:
        err_console.print("[red]set AIOT_NATS_USER and AIOT_NATS_PASSWORD: the platform's own NATS user[/]")
        raise typer.Exit(2)
    issuer = nkey_jwt.public_key(nkey_jwt.account_keypair(platform_secret(settings)))
    system_hash = (
        hash_password(settings.nats_system_password.get_secret_value())
        if settings.nats_system_user and settings.nats_system_password
        else None
    )
    console.print(
        server_config(
            issuer,
            settings.nats_user,
            hash_password(settings.nats_password.get_secret_value()),
            settings.nats_system_user,
            system_hash,
        ),
        markup=False,
        highlight=False,
    )
