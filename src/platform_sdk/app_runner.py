"""`python -m platform_sdk.app_runner`: start an app package the way its app.json says.

The manifest's `entrypoint` is either `module:function` (imported from `package_dir`, then called with no
arguments) or a script path ending in `.py` (run as `__main__`, like `python main.py`). Both normally end in
`platform_sdk.run()`. Web apps get their port from `serve.port` through the environment variables `PORT`
(and `HOST` from `serve.host`), which is what the sample apps read. When `serve.token` is set (the platform
always sets it for web apps) the runner itself holds `serve.host:serve.port` with the gateway guard
(web_guard.py) and the app's `PORT`/`HOST` are a private loopback port behind it: only requests the app
gateway forwards reach the app. A web app without `serve.token` starts only with `serve.open: true` (local runs).

The SDK runtime (connection, heartbeat) starts before the app is imported, so slow imports are covered by
the heartbeat's start-up grace. SIGTERM ends `run()` (or raises SystemExit in code that never calls it), so
buffered log records are flushed on the way out.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import signal
import sys
from pathlib import Path
from typing import Any


def _sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def run_app(entrypoint: str, package_dir: str) -> Any:
    path = str(Path(package_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    if entrypoint.endswith(".py") and ":" not in entrypoint:
        script = Path(path) / entrypoint
        if not script.is_file():
            raise SystemExit(f"app_runner: entrypoint script {script} does not exist")
        sys.argv = [str(script)]
        return runpy.run_path(str(script), run_name="__main__")
    module_name, _, attr = entrypoint.partition(":")
    if not attr:
        raise SystemExit(f"app_runner: entrypoint {entrypoint!r} must be 'module:function' or a '.py' script")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SystemExit(f"app_runner: {module_name!r} has no function {attr!r} (entrypoint {entrypoint!r})")
    result = fn()
    if hasattr(result, "__await__"):
        import asyncio

        async def _wait() -> Any:
            return await result

        result = asyncio.run(_wait())
    return result


def _use_uvloop() -> None:
    """The SDK's event loop (readings in, commands out, acknowledgements) runs on uvloop when it is installed
    (platform_sdk's requirements ask for it): profiling bench/telemetry.py showed the default loop's socket
    writes and cross-thread wake-ups as the app's largest cost."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def expose_port(serve: dict[str, Any], source: str) -> None:
    """Give the app its `PORT`/`HOST`: behind the gateway guard when there is a token (see the module doc)."""
    if not serve.get("port"):
        return
    token = serve.get("token")
    if isinstance(token, str) and token:
        from platform_sdk.web_guard import GatewayGuard, private_port

        upstream = private_port()
        GatewayGuard(str(serve.get("host") or "127.0.0.1"), int(serve["port"]), token, upstream).start()
        os.environ["PORT"], os.environ["HOST"] = str(upstream), "127.0.0.1"
        return
    if serve.get("open") is not True:
        raise SystemExit(
            f"{source}: field 'serve.token' is required for a web app (the gateway's token); "
            "set 'serve.open': true to serve without one outside the platform"
        )
    os.environ["PORT"] = str(serve["port"])
    if serve.get("host"):
        os.environ["HOST"] = str(serve["host"])


def main(argv: list[str] | None = None) -> None:
    from platform_sdk.runtime import config, configure, runtime

    parser = argparse.ArgumentParser(prog="python -m platform_sdk.app_runner")
    parser.add_argument("--config", help="config.json to use instead of $AIOT_WORKLOAD_CONFIG (local runs)")
    args = parser.parse_args(argv)
    cfg = configure(args.config) if args.config else config()
    package_dir = cfg.package_dir or os.getcwd()
    manifest = cfg.manifest
    if not manifest:
        import json

        manifest = json.loads((Path(package_dir) / "app.json").read_text(encoding="utf-8"))
    entrypoint = manifest.get("entrypoint")
    if not entrypoint:
        raise SystemExit(f"{cfg.source}: package.manifest has no 'entrypoint'")
    expose_port(cfg.serve, str(cfg.source))
    os.chdir(package_dir)
    signal.signal(signal.SIGTERM, _sigterm)
    _use_uvloop()
    runtime()  # connect and start the heartbeat before the app's (possibly slow) imports
    run_app(entrypoint, package_dir)


if __name__ == "__main__":
    main()
