"""`aiot node join`: run a node agent on this machine until SIGINT/SIGTERM.

The lead wires this sub-app into `aiot.cli.main` (`app.add_typer(node.node_app, name="node")`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import typer

from aiot.cli.output import err_console
from aiot.logs.handler import quiet_http_client_loggers
from aiot.settings import load_settings

node_app = typer.Typer(help="Run this machine as a node of a cluster.", no_args_is_help=True)


def parse_labels(text: str | None) -> dict[str, str]:
    """`k=v,k2=v2` -> dict; a clear error for anything else."""
    labels: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"label {item!r} must look like key=value (several: a=1,b=2)", param_hint="--labels"
            )
        labels[key.strip()] = value.strip()
    return labels


TOKEN_ENV = "AIOT_JOIN_TOKEN"


def read_join_token(on_command_line: str | None, token_file: Path | None) -> str | None:
    """The join token from --token-file or AIOT_JOIN_TOKEN (then removed from this process's environment, so
    nothing the agent starts inherits it). Never from the command line: every local user sees it in `ps`."""
    if on_command_line is not None:
        raise typer.BadParameter(
            "a join token on the command line is readable by every local user (ps, /proc/*/cmdline); put it in "
            "a file only you can read and pass --token-file FILE, or set the AIOT_JOIN_TOKEN environment "
            "variable",
            param_hint="--token",
        )
    from_env = os.environ.pop(TOKEN_ENV, None)
    if token_file is None:
        return (from_env.strip() or None) if from_env else None
    path = token_file.expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--token-file") from exc
    if mode & 0o077:
        raise typer.BadParameter(
            f"{path} is readable by other users (mode {mode & 0o777:o}); the join token is a secret: chmod 600 {path}",
            param_hint="--token-file",
        )
    if not text:
        raise typer.BadParameter(
            f"{path} is empty; expected the join token `aiot node token` printed", param_hint="--token-file"
        )
    return text


@node_app.command("join")
def join(
    server: str = typer.Option(None, "--server", help="Control plane URL (AIOT_SERVER)."),
    token_file: Path = typer.Option(
        None,
        "--token-file",
        help="File holding the join token (mode 0600); or set AIOT_JOIN_TOKEN. Not needed once joined.",
    ),
    token: str = typer.Option(None, "--token", hidden=True, help="Refused: use --token-file or AIOT_JOIN_TOKEN."),
    name: str = typer.Option(None, "--name", help="Node name (default: host name)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Agent data dir (default: <AIOT_DATA_DIR>/agent)."),
    labels: str = typer.Option(None, "--labels", help="Node labels, e.g. zone=lab,gpu=no."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address workloads' endpoints are reached at."),
    cpu: float = typer.Option(None, "--cpu", help="CPU capacity in cores (default: this machine's)."),
    memory_mb: int = typer.Option(None, "--memory-mb", help="Memory capacity in MiB (default: this machine's)."),
    env_cache: Path = typer.Option(None, "--env-cache", help="Shared env cache dir (default: <data-dir>/envs)."),
    http_port: int = typer.Option(0, "--http-port", help="Port of the agent's /healthz and /metrics (0: any)."),
    no_sandbox: bool = typer.Option(
        False, "--no-sandbox", help="Run workloads without bubblewrap (also needs AIOT_ALLOW_UNSANDBOXED=1)."
    ),
    runtime: str = typer.Option(
        None,
        "--runtime",
        help="How workloads run here: process (sandboxed processes) or docker (containers); AIOT_NODE_RUNTIME.",
    ),
    provider: str = typer.Option("manual", "--provider", hidden=True),
    nats_url: str = typer.Option(
        None, "--nats-url", help="NATS URL(s) this node uses instead of the control plane's (comma separated)."
    ),
) -> None:
    """Join the cluster at --server and run its workloads here until interrupted."""
    from aiot.agent.agent import RUNTIMES, AgentConfig, AgentError, NodeAgent
    from aiot.agent.load import node_capacity

    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_http_client_loggers()  # one line per poll is noise
    server = server or os.environ.get("AIOT_SERVER") or f"http://127.0.0.1:{settings.port}"
    runtime = runtime or settings.node_runtime
    if runtime not in RUNTIMES:
        err_console.print(f"[red]error:[/] --runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        raise typer.Exit(2)
    try:
        join_token = read_join_token(token, token_file)
    except typer.BadParameter as exc:
        err_console.print(f"[red]error:[/] {exc.param_hint}: {exc.message}")
        raise typer.Exit(2) from exc
    capacity = node_capacity()
    if cpu is not None:
        capacity["cpu"] = cpu
    if memory_mb is not None:
        capacity["memory_mb"] = memory_mb
    config = AgentConfig(
        server=server,
        join_token=join_token,
        name=name or socket.gethostname(),
        data_dir=(data_dir or settings.data_dir / "agent").expanduser(),
        address=address,
        labels=parse_labels(labels),
        capacity=capacity,
        provider=provider,
        env_cache_dir=env_cache.expanduser() if env_cache else None,
        hidden_paths=(settings.data_dir.expanduser(),),
        use_bwrap=False if no_sandbox else None,
        allow_unsandboxed=settings.allow_unsandboxed,
        workload_uid_base=settings.workload_uid_base,
        workload_uid_count=settings.workload_uid_count,
        source_build_allow=tuple(n.strip() for n in settings.source_build_allow.split(",") if n.strip()),
        http_port=http_port,
        runtime=runtime,
        nats_servers=[u.strip() for u in nats_url.split(",") if u.strip()] if nats_url else None,
    )
    try:
        asyncio.run(NodeAgent(config).run_until_signalled())
    except AgentError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
