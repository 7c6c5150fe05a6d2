"""The model serving wrapper: `python -m platform_sdk.serving` turns a model package into an HTTP service.

It imports the manifest's `entrypoint` (`module:attr` inside `package_dir`: a class with optional `load()` and
`predict(inputs)`, optionally `predict_batch(list)`, or a plain function), then serves on `serve.host:port`:

    POST /v1/predict        {"inputs": {...}} (or a list in the declared order; images base64 or {"b64": ...})
                            or multipart/form-data (image fields as files, the rest as JSON in field "inputs")
                            -> {"outputs": {...}, "model": {"name", "version"}}
    POST /v1/predict/batch  {"instances": [{...}, ...]} -> {"outputs": [...], "model": {...}}
    GET  /healthz           200 once loaded and warmed up (one prediction on the manifest's `example`);
                            503 while loading (or after load or warm-up failed)
    GET  /metrics           Prometheus text
    GET  /v1/metadata       the manifest

Every route but `/healthz` needs `Authorization: Bearer <serve.token>`, the token the platform issued for this
model (bound apps get it as `models.<alias>.token`; the control plane holds it for its own calls); anything
else is a 401 before the body is read (endpoint_auth.py). A config without `serve.token` refuses to start
unless it says `serve.open: true` (a local run outside the platform).

Bad input is a 422 `{"error", "field"}` naming the field (checked against the manifest by closures compiled
once, see validation.py); a `ValueError` raised by predict is the model saying the input is bad, also 422;
any other exception is a 500 with its type and message (and the traceback in the log).

Adaptive batching (opt-in, `model.json` `batching`: `max_batch_size`, `max_wait_ms`): concurrent `/v1/predict`
requests are grouped into one `predict_batch` call (batching.py); each caller gets its own result.

Performance: predict runs in a thread pool (CPU-bound model code never blocks the event loop); models are
called one at a time unless the class sets `thread_safe = True` (then up to `serve.threads` at once).
uvloop and httptools are used when installed, orjson when importable. The hot path does one JSON parse, the
compiled checks, one executor hop and one JSON dump.

Once loaded the replica announces itself every 2 s on `aiot.registry.announce.<model_id>.<workload_id>` (the one
announce subject its NATS user may publish on); on shutdown it sends one last announce with `"withdraw": true`
(and waits, up to 2 s, until NATS has it) so the registry drops it at once instead of after the TTL.
The heartbeat is beaten by a task on this server's event loop (see heartbeat.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import inspect
import json
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from platform_sdk.batching import Batcher
from platform_sdk.config import WorkloadConfig
from platform_sdk.endpoint_auth import MODEL_TOKEN_HEADER, TokenGuard, bearer
from platform_sdk.validation import InputError, InputValidator

try:  # optional speed-up
    import orjson

    def _dumps(obj: Any) -> bytes:
        encoded: bytes = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)
        return encoded

    _loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=_default).encode()

    _loads = json.loads

ANNOUNCE_EVERY = 2.0
MAX_BATCH = 1000
JSON = "application/json"
_WILDCARD = {"0.0.0.0", "::", ""}
SERVER_KEEPALIVE = 75
"""Idle keep-alive seconds (uvicorn's default is 5, which equals httpx's pool expiry: a request could meet a
connection the server was closing). Clients expire idle connections after 4 s (platform_sdk.models)."""


def _default(obj: Any) -> Any:
    """numpy scalars/arrays and bytes in model outputs."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, bytes | bytearray):
        import base64

        return {"b64": base64.b64encode(bytes(obj)).decode()}
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def load_entrypoint(package_dir: str | Path, entrypoint: str) -> tuple[Any, Any]:
    """Import `module:attr` from `package_dir`; returns (model object or function, predict callable)."""
    if ":" not in entrypoint:
        raise ValueError(f"entrypoint {entrypoint!r} must be 'module:attr'")
    module_name, attr = entrypoint.split(":", 1)
    path = str(Path(package_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    module = importlib.import_module(module_name)
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"entrypoint {entrypoint!r}: module {module_name!r} has no attribute {attr!r}") from None
    if inspect.isclass(target):
        model: Any = target()
        if not callable(getattr(model, "predict", None)):
            raise ValueError(f"entrypoint {entrypoint!r}: class {attr} has no predict(inputs) method")
        return model, model.predict
    if callable(target):
        return target, target
    raise ValueError(f"entrypoint {entrypoint!r} is neither a class nor a function")


class ModelServer:
    """One replica: model object, validators, metrics and the Starlette app."""

    def __init__(self, cfg: WorkloadConfig, *, threads: int | None = None) -> None:
        self.cfg = cfg
        manifest = cfg.manifest
        if not manifest and cfg.package_dir:
            manifest = json.loads((Path(cfg.package_dir) / "model.json").read_text(encoding="utf-8"))
        if not manifest.get("entrypoint") or not manifest.get("inputs"):
            raise ValueError(f"{cfg.source}: package.manifest must be a model.json with entrypoint and inputs")
        self.manifest = manifest
        self.model_id = cfg.package.get("id") or manifest.get("name", "model")
        self.info = {"name": manifest.get("name"), "version": manifest.get("version")}
        self.validate = InputValidator(manifest["inputs"])
        serve = cfg.serve
        self.threads = int(threads or serve.get("threads") or max(2, min(8, os.cpu_count() or 2)))
        self.hang_after = float(serve.get("hang_after") or 60.0)
        self.load_timeout = float(serve.get("load_timeout") or 300.0)
        self.keepalive_s = float(serve.get("keepalive_s") or SERVER_KEEPALIVE)  # bench/keepalive.py lowers it
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="predict")
        self.model: Any = None
        self.predict_fn: Any = None
        self.predict_batch_fn: Any = None
        self.is_async = False
        self.lock: threading.Lock | None = threading.Lock()
        self.state = "loading"
        self.warmup_s: float | None = None
        self.load_error = ""
        self.started = time.monotonic()
        self.inflight: dict[int, float] = {}
        self.url = ""
        self._metadata = _dumps(manifest)
        self._info_prefix = b'{"model":' + _dumps(self.info) + b',"outputs":'
        self._setup_metrics()
        batching = manifest.get("batching") or None
        self.batcher = (
            Batcher(
                self._predict_many,
                max_batch_size=int(batching.get("max_batch_size", 16)),
                max_wait_ms=float(batching.get("max_wait_ms", 2.0)),
                on_batch=self.m_batch_size.observe,
            )
            if batching
            else None
        )
        self.app = guarded(self._build_app(), cfg)

    # ------------------------------------------------------------------------------------------ metrics

    def _setup_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "aiot_model_requests",
            "Predict requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.m_latency = Histogram(
            "aiot_model_request_seconds",
            "Predict request latency (wrapper included)",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.m_predict = Histogram(
            "aiot_model_predict_seconds",
            "Time spent in the model's predict",
            registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
        )
        self.m_inflight = Gauge("aiot_model_inflight", "Predict calls running now", registry=self.registry)
        self.m_batch_size = Histogram(
            "aiot_model_batch_size",
            "Requests per batch call (adaptive batching)",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.m_ok = self.m_requests.labels("predict", "200")
        self.m_lat_predict = self.m_latency.labels("predict")

    # ------------------------------------------------------------------------------------------ model

    def load(self) -> None:
        """Import and load the model (in a worker thread at start-up)."""
        package_dir = self.cfg.package_dir or os.getcwd()
        model, predict = load_entrypoint(package_dir, self.manifest["entrypoint"])
        if model is not predict and callable(getattr(model, "load", None)):
            model.load()
        self.model, self.predict_fn = model, predict
        self.predict_batch_fn = getattr(model, "predict_batch", None) if model is not predict else None
        self.is_async = inspect.iscoroutinefunction(predict)
        if getattr(model, "thread_safe", False):
            self.lock = None
        self.warm_up(package_dir)

    def warm_up(self, package_dir: str) -> None:
        """One prediction on the manifest's `example` before the replica says it is ready: a model that loads
        but cannot predict (a missing file, a wrong version of a library) never takes traffic, and the first
        caller does not pay for lazy initialisation. Raises ValueError naming the example on failure."""
        example = self.manifest.get("example")
        if not example:
            return
        inputs: dict[str, Any] = {}
        for name, value in example.items():
            if isinstance(value, dict) and set(value) == {"file"}:  # an image stored inside the package
                value = base64.b64encode((Path(package_dir) / str(value["file"])).read_bytes()).decode("ascii")
            inputs[name] = value
        started = time.monotonic()
        try:
            clean = self.validate(inputs)
            outputs = asyncio.run(self.predict_fn(clean)) if self.is_async else self.predict_fn(clean)
        except Exception as exc:
            raise ValueError(
                f"warm-up prediction on the manifest's example failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(outputs, dict):
            raise ValueError(
                f"warm-up prediction on the manifest's example returned {type(outputs).__name__}, "
                "expected a dict of outputs"
            )
        self.warmup_s = round(time.monotonic() - started, 3)

    def _run(self, fn: Any, arg: Any) -> Any:
        token = threading.get_ident()
        start = time.monotonic()
        self.inflight[token] = start
        try:
            if self.lock is None:
                result = fn(arg)
            else:
                with self.lock:
                    result = fn(arg)
        finally:
            del self.inflight[token]
            self.m_predict.observe(time.monotonic() - start)
        return result

    async def _predict(self, inputs: dict[str, Any]) -> Any:
        if self.is_async:
            return await self.predict_fn(inputs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, self.predict_fn, inputs)

    async def _predict_many(self, items: list[dict[str, Any]]) -> list[Any]:
        if self.is_async:
            return [await self.predict_fn(i) for i in items]
        if self.predict_batch_fn is not None:
            fn = self.predict_batch_fn
        else:
            predict = self.predict_fn

            def fn(batch: list[dict[str, Any]]) -> list[Any]:
                return [predict(i) for i in batch]

        result = await asyncio.get_running_loop().run_in_executor(self.executor, self._run, fn, items)
        return list(result)

    # ------------------------------------------------------------------------------------------ HTTP

    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        def reply(status: int, body: bytes) -> Response:
            return Response(body, status_code=status, media_type=JSON)

        def problem(status: int, message: str, field: str | None = None) -> Response:
            return reply(status, _dumps({"error": message, "field": field}))

        async def read_inputs(request: Any, key: str) -> Any:
            ctype = request.headers.get("content-type", "")
            length = request.headers.get("content-length")
            limit = self.validate.max_image_bytes * 2 + 1_048_576
            if length is not None and length.isdigit() and int(length) > limit:
                raise InputError("body", f"request body of {length} bytes is larger than {limit}")
            if ctype.startswith("multipart/form-data"):
                return await self._read_multipart(request)
            body = await request.body()
            try:
                doc = _loads(body)
            except ValueError:
                raise InputError("body", "request body is not valid JSON") from None
            if not isinstance(doc, dict) or key not in doc:
                raise InputError(key, f"request body must be a JSON object with {key!r}")
            return doc[key]

        def failure(exc: Exception, what: str) -> Response:
            if isinstance(exc, ValueError):
                message = str(exc)
                head = message.split(":", 1)[0].strip().strip("'\"")
                field = head if head in self.validate.checks else None
                return problem(422, message, field)
            from platform_sdk.logs import get_logger

            with contextlib.suppress(Exception):
                get_logger("platform_sdk.serving").error("%s failed:\n%s", what, traceback.format_exc())
            return problem(500, f"{what} failed: {type(exc).__name__}: {exc}")

        async def predict(request: Any) -> Response:
            start = time.perf_counter()
            if self.state != "ready":
                return problem(503, f"model is {self.state}")
            try:
                inputs = self.validate(await read_inputs(request, "inputs"))
            except InputError as exc:
                self.m_requests.labels("predict", "422").inc()
                return problem(422, exc.message, exc.field)
            self.m_inflight.inc()
            try:
                outputs = await (self.batcher.submit(inputs) if self.batcher else self._predict(inputs))
            except Exception as exc:  # noqa: BLE001 - reported to the caller, never crashes the server
                resp = failure(exc, "predict")
                self.m_requests.labels("predict", str(resp.status_code)).inc()
                return resp
            finally:
                self.m_inflight.dec()
            if not isinstance(outputs, dict):
                self.m_requests.labels("predict", "500").inc()
                return problem(500, f"predict returned {type(outputs).__name__}, expected a dict of outputs")
            body = self._info_prefix + _dumps(outputs) + b"}"
            self.m_ok.inc()
            self.m_lat_predict.observe(time.perf_counter() - start)
            return reply(200, body)

        async def predict_batch(request: Any) -> Response:
            start = time.perf_counter()
            if self.state != "ready":
                return problem(503, f"model is {self.state}")
            try:
                instances = await read_inputs(request, "instances")
                if not isinstance(instances, list) or not instances:
                    raise InputError("instances", "instances must be a non-empty list of input objects")
                if len(instances) > MAX_BATCH:
                    raise InputError("instances", f"at most {MAX_BATCH} instances per batch, got {len(instances)}")
                clean = [self.validate(item, f"instances[{i}].") for i, item in enumerate(instances)]
            except InputError as exc:
                self.m_requests.labels("batch", "422").inc()
                return problem(422, exc.message, exc.field)
            try:
                outputs = await self._predict_many(clean)
            except Exception as exc:  # noqa: BLE001
                resp = failure(exc, "predict_batch")
                self.m_requests.labels("batch", str(resp.status_code)).inc()
                return resp
            self.m_requests.labels("batch", "200").inc()
            self.m_latency.labels("batch").observe(time.perf_counter() - start)
            return reply(200, self._info_prefix + _dumps(outputs) + b"}")

        async def healthz(_request: Any) -> Response:
            if self.state == "ready":
                return reply(200, b'{"status":"ok"}')
            return reply(503, _dumps({"status": self.state, "error": self.load_error or None}))

        async def metadata(_request: Any) -> Response:
            return reply(200, self._metadata)

        async def metrics(_request: Any) -> Response:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        routes = [
            Route("/v1/predict", predict, methods=["POST"]),
            Route("/v1/predict/batch", predict_batch, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/metadata", metadata, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=self._lifespan)

    async def _read_multipart(self, request: Any) -> dict[str, Any]:
        try:
            form = await request.form(max_files=32, max_fields=256)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies
            raise InputError("body", f"malformed multipart body: {exc}") from None
        inputs: dict[str, Any] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                inputs[key] = await value.read()
            elif key == "inputs":
                try:
                    extra = _loads(value)
                except ValueError:
                    raise InputError("inputs", "multipart field 'inputs' must be a JSON object") from None
                if not isinstance(extra, dict):
                    raise InputError("inputs", "multipart field 'inputs' must be a JSON object")
                inputs.update(extra)
            else:
                try:
                    inputs[key] = _loads(value)
                except ValueError:
                    inputs[key] = value
        return inputs

    # ------------------------------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> Any:
        tasks = [
            asyncio.create_task(self._load_task()),
            asyncio.create_task(self._beat_task()),
            asyncio.create_task(self._announce_task()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            was_ready, self.state = self.state == "ready", "stopping"
            if was_ready:
                await self._withdraw()

    async def _load_task(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.load)
        except Exception as exc:  # noqa: BLE001 - reported, then the process exits for a restart
            self.state = "failed"
            self.load_error = f"{type(exc).__name__}: {exc}"
            print(
                f"platform_sdk.serving: loading the model failed:\n{traceback.format_exc()}",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(Exception):
                from platform_sdk.logs import get_logger

                get_logger("platform_sdk.serving").error("loading the model failed: %s", self.load_error)
            await asyncio.sleep(0.5)  # let the log record go out
            os._exit(3)
        self.state = "ready"
        self._announce()

    def beat_allowed(self, now: float) -> bool:
        """Heartbeat only while this loop runs, loading is within its time budget and no predict is stuck."""
        if self.state == "loading":
            return now - self.started < self.load_timeout
        oldest = min(self.inflight.values(), default=now)
        return now - oldest < self.hang_after

    async def _beat_task(self) -> None:
        from platform_sdk.runtime import runtime

        rt = runtime()
        interval = self.cfg.heartbeat_interval
        while True:
            if self.beat_allowed(time.monotonic()):
                rt.heartbeat.beat()
            await asyncio.sleep(interval)

    @property
    def _announce_subject(self) -> str:
        return f"aiot.registry.announce.{self.model_id}.{self.cfg.workload_id}"  # the only one it may use

    def _announce_body(self, withdraw: bool = False) -> bytes:
        body: dict[str, Any] = {
            "model_id": self.model_id,
            "workload_id": self.cfg.workload_id,
            "url": self.url,
            **self.info,
            "ts": time.time(),
        }
        if withdraw:
            body["withdraw"] = True
        return _dumps(body)

    def _announce(self) -> None:
        from platform_sdk.runtime import runtime

        runtime().publish_nowait(self._announce_subject, self._announce_body())

    async def _withdraw(self, limit: float = 2.0) -> None:
        """The last announce, awaited until NATS has it. Queuing it for the SDK thread is not enough: once this
        lifespan ends, uvicorn re-raises the SIGTERM it caught, which kills the process before that thread sends
        anything (no atexit either), and the registry kept handing out the dead URL until the TTL (10 s)."""
        from platform_sdk.runtime import runtime

        rt = runtime()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                rt.acall(rt.publish_flushed(self._announce_subject, self._announce_body(True), limit)), limit
            )

    async def _announce_task(self) -> None:
        while True:
            await asyncio.sleep(ANNOUNCE_EVERY)
            if self.state == "ready":
                self._announce()

    def serve(self) -> None:
        """Bind, then run uvicorn until SIGTERM/SIGINT (blocking)."""
        import uvicorn

        from platform_sdk.runtime import runtime

        rt = runtime()
        rt.pacemaker_enabled = False  # beats come from this server's loop (see _beat_task)
        host = str(self.cfg.serve.get("host") or "127.0.0.1")
        port = int(self.cfg.serve.get("port") or 0)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        public = self.cfg.serve.get("public_url")
        self.url = (
            str(public)
            if public and (self.cfg.serve.get("port") or 0)
            else (f"http://{'127.0.0.1' if host in _WILDCARD else host}:{port}")
        )
        loop = "uvloop" if _has("uvloop") else "asyncio"
        http = "httptools" if _has("httptools") else "h11"
        config = uvicorn.Config(
            self.app,
            loop=loop,
            http=http,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=self.keepalive_s,  # type: ignore[arg-type]  # a float works (call_later); the bench uses fractions
            server_header=False,
            date_header=False,
        )
        print(
            f"platform_sdk.serving: {self.info['name']} {self.info['version']} on {self.url} "
            f"({loop}/{http}, {self.threads} threads)",
            flush=True,
        )
        uvicorn.Server(config).run(sockets=[sock])


def guarded(app: Any, cfg: WorkloadConfig) -> Any:
    """`app` behind the model-token check; without `serve.token` only an explicit `serve.open` serves (a
    replica the platform started always has a token, so a missing one is a fault, never an open door)."""
    token = cfg.serve.get("token")
    if isinstance(token, str) and token:
        return TokenGuard(app, header=MODEL_TOKEN_HEADER, expected=bearer(token))
    if cfg.serve.get("open") is True:
        return app
    raise ValueError(
        f"{cfg.source}: field 'serve.token' is required (the token callers must present); "
        "set 'serve.open': true to serve without one outside the platform"
    )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> None:
    from platform_sdk.runtime import config, configure

    parser = argparse.ArgumentParser(prog="python -m platform_sdk.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config.json to use instead of $AIOT_WORKLOAD_CONFIG (local runs)")
    args = parser.parse_args(argv)
    cfg = configure(args.config) if args.config else config()
    if cfg.package_dir:
        os.chdir(cfg.package_dir)
    ModelServer(cfg).serve()


if __name__ == "__main__":
    main()
