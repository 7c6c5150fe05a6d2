"""A test workload that uses ONLY platform_sdk: one JSON command per stdin line, one JSON answer per line.

Run by tests/sdk with AIOT_WORKLOAD_CONFIG set, like any app the node agent starts.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

import platform_sdk
from platform_sdk import controller, get_logger, model_call, model_call_batch, sensor


def _reading(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    out = {"device_id": r.device_id, "ts": r.ts.isoformat(), "values": r.values, "is_frame": r.is_frame}
    if r.is_frame:
        out["shape"] = list(r.image.shape)
    return out


def handle(cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "model_call":
        params = cmd.get("params")
        if cmd.get("image_file"):
            with open(cmd["image_file"], "rb") as fh:
                params = {"image": fh.read(), **(params or {})}
        return model_call(cmd["alias"], params=params, timeout=cmd.get("timeout", 10.0))
    if op == "model_call_array":  # a decoded image (numpy RGB array) as input
        import numpy as np

        from platform_sdk.wire import decode_image

        with open(cmd["image_file"], "rb") as fh:
            array = decode_image(fh.read())
        assert isinstance(array, np.ndarray)
        return model_call(cmd["alias"], [array], timeout=10.0)
    if op == "batch":
        return model_call_batch(cmd["alias"], cmd["instances"])
    if op == "call_loop":  # keep calling for `seconds`; print a progress line after `mark` calls
        ok, failures, end = 0, [], time.monotonic() + cmd["seconds"]
        while time.monotonic() < end:
            try:
                model_call(cmd["alias"], cmd["params"], timeout=5.0)
                ok += 1
            except Exception as exc:  # noqa: BLE001 - reported to the test
                failures.append(f"{type(exc).__name__}: {exc}")
            if ok == cmd.get("mark"):
                print(json.dumps({"progress": ok}), flush=True)
        return {"ok": ok, "failures": failures}
    if op == "latest":
        return _reading(sensor(cmd["alias"]).latest())
    if op == "read":
        return _reading(sensor(cmd["alias"]).read(timeout=cmd.get("timeout", 5.0)))
    if op == "send":
        return controller(cmd["alias"]).send(cmd["command"], timeout=cmd.get("cmd_timeout", 5.0), **cmd.get("args", {}))
    if op == "send_nowait":  # several one-way commands; the answer is each one's outcome, waited for afterwards
        ctrl, started = controller(cmd["alias"]), time.monotonic()
        futures = [ctrl.send_nowait(cmd["command"], timeout=cmd.get("cmd_timeout", 5.0), **a) for a in cmd["each"]]
        queued_in = time.monotonic() - started
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(10.0))
            except Exception as exc:  # noqa: BLE001 - reported to the test
                outcomes.append(type(exc).__name__)
        return {"queued_in": queued_in, "outcomes": outcomes}
    if op == "log":
        get_logger(cmd.get("logger")).warning(cmd["message"])
        return True
    if op == "modules":
        return sorted(m for m in sys.modules if m == "aiot" or m.startswith("aiot."))
    if op == "settings":
        return platform_sdk.settings()
    if op == "io_thread_imports":
        return sorted(set(IO_THREAD_IMPORTS))
    if op == "b64":
        return base64.b64encode(b"x").decode()
    raise ValueError(f"unknown op {op!r}")


IO_THREAD_IMPORTS: list[str] = []
"""Modules first imported on the SDK's I/O thread once it runs: an import there stalls the heartbeat."""


def _record_io_thread_imports() -> None:
    import threading

    from platform_sdk.runtime import runtime

    rt = runtime()
    rt.call(rt.wait_connected(10.0), 12.0)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import" and threading.current_thread().name == "platform-sdk-io":
            IO_THREAD_IMPORTS.append(str(args[0]))

    sys.addaudithook(hook)


def main() -> None:
    _record_io_thread_imports()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            answer = {"ok": True, "result": handle(cmd)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            answer = {
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
                "field": getattr(exc, "field", None),
                "status": getattr(exc, "status", None),
                "results": {
                    k: (v if isinstance(v, dict) else type(v).__name__)
                    for k, v in (getattr(exc, "results", None) or {}).items()
                },
            }
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
