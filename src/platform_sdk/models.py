"""`model_call`: resolve a model alias to live replicas and call one over HTTP.

Resolution: alias -> model id from the config's `models` (an id or a model name bound there also works),
then `aiot.registry.resolve.<model_id>` (answered by the registry service from the live endpoint KV),
cached for 2 s. Replicas are used round-robin; a replica that refuses the connection or drops it before
answering is skipped for the rest of the cache period and the call goes to the next one (predict calls must
be idempotent - they are pure functions of their inputs). A timeout is not retried (the model may still be
working on it). `timeout` bounds the whole call including retries.

Pooled keep-alive connections: a replica (uvicorn) closes an idle connection after its keep-alive timeout, and a
request sent on it at that instant fails with "server disconnected" / ReadError although the replica is healthy.
Two guards: the pool forgets idle connections well before the server's timeout (`KEEPALIVE_EXPIRY` against the
serving wrapper's 75 s), and a transport error on a possibly reused connection is retried once on a fresh
connection to the same replica before that replica is skipped. App code never sees this race.

Inputs: a dict maps by name, a list/tuple positionally onto the manifest's declared inputs (the server does
the mapping), a single value means the model's first input. `bytes` travel as base64 (`{"b64": ...}`);
uint8 numpy arrays of 2 or 3 dimensions are images (encoded as PNG); other numpy arrays become lists.

Credentials: replicas answer only callers with the model's token; a bound model's token comes with the
binding in config.json (`models.<alias>.token`) and goes out as `Authorization: Bearer <token>`. A model
called by id without a binding has no token, and its replicas answer 401 (ModelError, status 401).
"""

# ruff: noqa: ASYNC109 - the async API names its deadline `timeout`, exactly like the sync API

from __future__ import annotations

import base64
import contextlib
import importlib
import itertools
import json
import time
from typing import Any

from platform_sdk.endpoint_auth import bearer
from platform_sdk.errors import ModelError, ModelUnavailable, PlatformUnavailable, UnknownAlias
from platform_sdk.runtime import Runtime, runtime

RESOLVE_TTL = 2.0
KEEPALIVE_EXPIRY = 4.0
"""Seconds an idle pooled connection is kept; far below the replica's keep-alive timeout (serving: 75 s)."""
_STALE_CONNECTION_NAMES = ("ReadError", "WriteError", "RemoteProtocolError", "CloseError")
"""Transport errors a request on a connection the server just closed produces (not refusals or timeouts)."""
_RETRYABLE_NAMES = (
    "ConnectError",
    "ConnectTimeout",
    "ReadError",
    "WriteError",
    "RemoteProtocolError",
    "PoolTimeout",
    "CloseError",
)


FIRST_REQUEST_MODULES = (
    "httpx",
    "httpcore._backends.anyio",
    "anyio.lowlevel",
    "anyio.streams.tls",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio._core._sockets",
    "anyio._core._streams",
    "anyio._core._testing",
    "sniffio",
    "queue",
)
"""What httpx imports up to and during its first request (its anyio backend loads lazily); imported by the
calling thread before the first call (tests/sdk/test_models_e2e.py checks none is left for the SDK thread)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    mod = type(value).__module__
    if mod == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            if value.dtype == np.uint8 and value.ndim in (2, 3):
                from platform_sdk.wire import encode_image

                return {"b64": base64.b64encode(encode_image(value)).decode("ascii")}
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
    return value


def build_inputs(params: Any) -> Any:
    """The `inputs` member of a predict request for `params` (dict, list/tuple, or one value)."""
    if params is None:
        return {}
    if isinstance(params, dict):
        return _jsonable(params)
    if isinstance(params, list | tuple):
        return [_jsonable(v) for v in params]
    return [_jsonable(params)]


class ModelClient:
    """Per-process resolver cache, round-robin counters and pooled HTTP client (lives on the SDK loop)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._rr: dict[str, itertools.count[int]] = {}
        self._bad: dict[str, float] = {}
        self._http: Any = None
        self._headers: dict[str, dict[str, str]] = {}

    def headers(self, model_id: str) -> dict[str, str]:
        """The request headers for `model_id`: JSON, and the binding's token when there is one."""
        hit = self._headers.get(model_id)
        if hit is None:
            hit = {"content-type": "application/json"}
            token = next((b.token for b in self.rt.cfg.models.values() if b.model_id == model_id and b.token), "")
            if token:
                hit["authorization"] = bearer(token)
            self._headers[model_id] = hit
        return hit

    def lookup(self, alias_or_id: str) -> tuple[str, str]:
        """(model_id, label for messages); UnknownAlias when neither an alias, a bound name nor an id."""
        models = self.rt.cfg.models
        if alias_or_id in models:
            return models[alias_or_id].model_id, f"{alias_or_id!r} ({models[alias_or_id].model_id})"
        for alias, binding in models.items():
            if alias_or_id in (binding.model_id, binding.name):
                return binding.model_id, f"{alias!r} ({binding.model_id})"
        if alias_or_id.startswith("mdl_"):
            return alias_or_id, alias_or_id
        raise UnknownAlias("model", alias_or_id, list(models))

    def http_ready(self) -> None:
        """Import and build the pooled HTTP client now, in the calling thread (see `_prepared`), with what httpx
        imports only on its first connection (its anyio backend)."""
        if self._http is None:
            for name in FIRST_REQUEST_MODULES:
                with contextlib.suppress(ImportError):  # another httpx/anyio version: fewer or other modules
                    importlib.import_module(name)
            self._client()

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                trust_env=False,
                limits=httpx.Limits(
                    max_connections=256, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_EXPIRY
                ),
            )
        return self._http

    async def endpoints(self, model_id: str, label: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        hit = self._cache.get(model_id)
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        nc = await self.rt.wait_connected(5.0)
        import nats.errors

        try:
            msg = await nc.request(f"aiot.registry.resolve.{model_id}", b"", timeout=2.0)
        except nats.errors.NoRespondersError:
            raise ModelUnavailable(f"model {label}: the platform's registry service is not running") from None
        except nats.errors.TimeoutError:
            raise ModelUnavailable(f"model {label}: the registry service did not answer within 2s") from None
        try:
            endpoints = [e for e in json.loads(msg.data).get("endpoints", []) if e.get("url")]
        except (ValueError, AttributeError):
            raise PlatformUnavailable(f"model {label}: malformed answer from the registry") from None
        self._cache[model_id] = (now + RESOLVE_TTL, endpoints)
        return endpoints

    def _order(self, model_id: str, endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not endpoints:
            return []
        start = next(self._rr.setdefault(model_id, itertools.count())) % len(endpoints)
        ring = endpoints[start:] + endpoints[:start]
        now = time.monotonic()
        good = [e for e in ring if self._bad.get(e["url"], 0.0) <= now]
        return good + [e for e in ring if e not in good]

    async def post(self, alias_or_id: str, path: str, body: dict[str, Any], timeout: float) -> Any:
        model_id, label = self.lookup(alias_or_id)
        deadline = time.monotonic() + timeout
        payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        tried: set[str] = set()
        failures: list[str] = []
        for fresh in (False, True):
            endpoints = await self.endpoints(model_id, label, fresh=fresh)
            for ep in self._order(model_id, endpoints):
                url = ep["url"].rstrip("/")
                if url in tried:
                    continue
                tried.add(url)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ModelUnavailable(f"model {label}: no answer within {timeout:g}s")
                status, data, error = await self._send(url + path, payload, remaining, self.headers(model_id))
                if error is not None and error.startswith(_STALE_CONNECTION_NAMES):
                    remaining = deadline - time.monotonic()
                    if remaining > 0:  # the pooled connection may have been closed under us: once, fresh
                        status, data, error = await self._send(
                            url + path, payload, remaining, self.headers(model_id), fresh=True
                        )
                if error is not None:
                    self._bad[url] = time.monotonic() + RESOLVE_TTL
                    failures.append(f"{url}: {error}")
                    continue
                if status == 503:  # replica loading or shutting down: try another one
                    failures.append(f"{url}: not ready (503)")
                    continue
                return _result(status, data, label)
        if not tried:
            raise ModelUnavailable(f"model {label}: no healthy replica is registered (is the model deployed?)")
        raise ModelUnavailable(f"model {label}: no replica answered ({'; '.join(failures)})")

    async def _send(
        self, url: str, payload: bytes, timeout: float, headers: dict[str, str], *, fresh: bool = False
    ) -> tuple[int, bytes, str | None]:
        """POST once. `fresh`: on a new connection of its own (a one-off client), never a pooled one."""
        import httpx

        try:
            if fresh:
                async with httpx.AsyncClient(trust_env=False) as once:
                    resp = await once.post(url, content=payload, timeout=timeout, headers=headers)
            else:
                resp = await self._client().post(url, content=payload, timeout=timeout, headers=headers)
        except httpx.TimeoutException as exc:
            if type(exc).__name__ in _RETRYABLE_NAMES:
                return 0, b"", f"{type(exc).__name__}"
            raise ModelUnavailable(f"{url}: no answer within {timeout:.3g}s") from None
        except httpx.TransportError as exc:
            return 0, b"", f"{type(exc).__name__}: {exc}"
        return resp.status_code, resp.content, None


def _result(status: int, data: bytes, label: str) -> Any:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {"error": data[:200].decode("utf-8", "replace")}
    if status == 200:
        return body
    message = body.get("error") if isinstance(body, dict) else None
    field = body.get("field") if isinstance(body, dict) else None
    raise ModelError(
        f"model {label} answered {status}: {message or 'no detail'}", status=status, field=field, model=label
    )


def _client(rt: Runtime) -> ModelClient:
    client = rt.extensions.get("models")
    if client is None:
        client = rt.extensions["models"] = ModelClient(rt)
    return client


async def _call(client: ModelClient, alias_or_id: str, inputs: Any, timeout: float) -> dict[str, Any]:
    body = await client.post(alias_or_id, "/v1/predict", {"inputs": inputs}, timeout)
    outputs: dict[str, Any] = body.get("outputs", body)
    return outputs


async def _call_batch(client: ModelClient, alias_or_id: str, instances: list[Any], timeout: float) -> list[Any]:
    body = await client.post(alias_or_id, "/v1/predict/batch", {"instances": instances}, timeout)
    outputs: list[Any] = body.get("outputs", body)
    return outputs


def _prepared(alias_or_id: str) -> tuple[Runtime, ModelClient]:
    """The runtime and its model client, made ready in the *caller's* thread: an unknown alias fails here with a
    clear message, and the HTTP client's imports and TLS set-up (the first call's ~200 modules) never run on the
    SDK's own thread, whose stalls would stop the heartbeat (see heartbeat.py)."""
    rt = runtime()
    client = _client(rt)
    client.lookup(alias_or_id)
    client.http_ready()
    return rt, client


def model_call(alias_or_id: str, params: Any = None, timeout: float = 30.0) -> dict[str, Any]:
    """Call a model and return its outputs dict, e.g.
    `model_call("comfort", {"temperature": 30, "light": 100})`
    or the seed's positional form `model_call("comfort", params=[30, 100])`.

    Raises UnknownAlias (not bound), ModelUnavailable (no replica reachable / timeout), ModelError (the
    model refused the input - `.status`, `.field` - or failed)."""
    rt, client = _prepared(alias_or_id)
    return rt.call(_call(client, alias_or_id, build_inputs(params), timeout), timeout)


async def amodel_call(alias_or_id: str, params: Any = None, timeout: float = 30.0) -> dict[str, Any]:
    """Async `model_call`."""
    rt, client = _prepared(alias_or_id)
    return await rt.acall(_call(client, alias_or_id, build_inputs(params), timeout))


def model_call_batch(alias_or_id: str, instances: list[Any], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Several predictions in one request (`/v1/predict/batch`); returns one outputs dict per instance."""
    rt, client = _prepared(alias_or_id)
    return rt.call(_call_batch(client, alias_or_id, [build_inputs(i) for i in instances], timeout), timeout)


async def amodel_call_batch(alias_or_id: str, instances: list[Any], timeout: float = 60.0) -> list[dict[str, Any]]:
    rt, client = _prepared(alias_or_id)
    return await rt.acall(_call_batch(client, alias_or_id, [build_inputs(i) for i in instances], timeout))
