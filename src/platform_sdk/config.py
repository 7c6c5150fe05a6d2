"""The workload configuration (`config.json` written by the node agent; see docs/workload-contract.md).

Why a small hand-written class and not Pydantic: the SDK runs inside every workload's own virtual environment
and must stay light; the config is checked once, at load time, with errors that name the file and field.
For local development pass a dict or a path to `platform_sdk.configure(...)` instead of the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform_sdk.errors import ConfigError, NotOnPlatform

ENV_VAR = "AIOT_WORKLOAD_CONFIG"


@dataclass(frozen=True)
class DeviceBinding:
    device_id: str
    device_type: dict[str, Any]


@dataclass(frozen=True)
class ModelBinding:
    model_id: str
    name: str = ""
    version: str = ""
    token: str = field(default="", repr=False)
    """What the model's replicas require (`Authorization: Bearer <token>`); never printed."""


@dataclass(frozen=True)
class WorkloadConfig:
    """Parsed config.json. `raw` keeps the whole document (unknown keys are allowed: forward compatible)."""

    workload_id: str
    kind: str
    source: str
    raw: dict[str, Any]
    servers: list[str]
    nats_user: str | None = None
    nats_password: str | None = None
    heartbeat_file: str | None = None
    heartbeat_interval: float = 1.0
    heartbeat_subject: str | None = None
    hang_after: float = 5.0
    startup_grace: float = 60.0
    log_subject: str | None = None
    app_instance_id: str | None = None
    package: dict[str, Any] = field(default_factory=dict)
    package_dir: str | None = None
    serve: dict[str, Any] = field(default_factory=dict)
    models: dict[str, ModelBinding] = field(default_factory=dict)
    sensors: dict[str, list[DeviceBinding]] = field(default_factory=dict)
    controllers: dict[str, list[DeviceBinding]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self.package.get("manifest") or {})


def _err(source: str, key: str, expected: str) -> ConfigError:
    return ConfigError(f"{source}: field {key!r} {expected}")


def _get(
    doc: Mapping[str, Any],
    key: str,
    typ: type | tuple[type, ...],
    source: str,
    *,
    required: bool = False,
    default: Any = None,
    prefix: str = "",
) -> Any:
    name = prefix + key
    if key not in doc or doc[key] is None:
        if required:
            raise _err(source, name, "is required")
        return default
    value = doc[key]
    if typ in (float, (int, float)) and isinstance(value, bool) or not isinstance(value, typ):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise _err(source, name, f"must be a {tname}, got {type(value).__name__}")
    return value


def _devices(doc: Mapping[str, Any], key: str, source: str) -> dict[str, list[DeviceBinding]]:
    out: dict[str, list[DeviceBinding]] = {}
    for alias, items in (_get(doc, key, dict, source, default={}) or {}).items():
        if isinstance(items, dict):  # tolerate a single binding written without the list
            items = [items]
        if not isinstance(items, list):
            raise _err(source, f"{key}.{alias}", "must be a list of {device_id, device_type}")
        bindings = []
        for i, item in enumerate(items):
            where = f"{key}.{alias}[{i}]."
            if not isinstance(item, dict):
                raise _err(source, where[:-1], "must be an object")
            bindings.append(
                DeviceBinding(
                    device_id=_get(item, "device_id", str, source, required=True, prefix=where),
                    device_type=_get(item, "device_type", dict, source, default={}, prefix=where),
                )
            )
        out[alias] = bindings
    return out


def parse_config(doc: Mapping[str, Any], source: str = "config") -> WorkloadConfig:
    """Check and parse a config document; ConfigError names `source` and the field on any problem."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: must be a JSON object")
    wid = _get(doc, "workload_id", str, source, required=True)
    nats = _get(doc, "nats", dict, source, required=True)
    servers = nats.get("servers")
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
        raise _err(source, "nats.servers", "must be a non-empty list of nats:// URLs")
    hb = _get(doc, "heartbeat", dict, source, default={})
    interval = float(_get(hb, "interval", (int, float), source, default=1.0, prefix="heartbeat."))
    if interval <= 0:
        raise _err(source, "heartbeat.interval", "must be > 0 seconds")
    models = {}
    for alias, m in (_get(doc, "models", dict, source, default={}) or {}).items():
        where = f"models.{alias}."
        if isinstance(m, str):
            m = {"model_id": m}
        if not isinstance(m, dict):
            raise _err(source, where[:-1], "must be an object {model_id, name, version}")
        models[alias] = ModelBinding(
            model_id=_get(m, "model_id", str, source, required=True, prefix=where),
            name=_get(m, "name", str, source, default="", prefix=where),
            version=_get(m, "version", str, source, default="", prefix=where),
            token=_get(m, "token", str, source, default="", prefix=where),
        )
    serve = _get(doc, "serve", dict, source, default={})
    return WorkloadConfig(
        workload_id=wid,
        kind=_get(doc, "kind", str, source, default="app"),
        source=source,
        raw=dict(doc),
        servers=servers,
        nats_user=_get(nats, "user", str, source, prefix="nats."),
        nats_password=_get(nats, "password", str, source, prefix="nats."),
        heartbeat_file=_get(hb, "file", str, source, prefix="heartbeat."),
        heartbeat_interval=interval,
        heartbeat_subject=_get(hb, "subject", str, source, default=f"aiot.hb.{wid}", prefix="heartbeat."),
        hang_after=float(_get(hb, "hang_after", (int, float), source, default=5 * interval, prefix="heartbeat.")),
        startup_grace=float(_get(hb, "startup_grace", (int, float), source, default=60.0, prefix="heartbeat.")),
        log_subject=_get(doc, "log_subject", str, source),
        app_instance_id=_get(doc, "app_instance_id", str, source),
        package=_get(doc, "package", dict, source, default={}),
        package_dir=_get(doc, "package_dir", str, source),
        serve=serve,
        models=models,
        sensors=_devices(doc, "sensors", source),
        controllers=_devices(doc, "controllers", source),
        settings=_get(doc, "settings", dict, source, default={}),
    )


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> WorkloadConfig:
    """Load from a dict, a path, or (default) the file named by AIOT_WORKLOAD_CONFIG."""
    if isinstance(source, Mapping):
        return parse_config(source, "config dict")
    if source is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise NotOnPlatform(
                f"{ENV_VAR} is not set: not running under the platform. The node agent sets it for every "
                "workload; for local development call platform_sdk.configure('config.json') (or a dict) "
                "before using the SDK."
            )
        source = env
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the workload config ({exc.strerror or exc})") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return parse_config(doc, str(path))


def merged_settings(cfg: WorkloadConfig) -> dict[str, Any]:
    """The app's settings: defaults declared in app.json's context, overridden by the user's values."""
    out: dict[str, Any] = {}
    context = (cfg.manifest.get("context") or {}) if cfg.package else {}
    for name, spec in (context.get("settings") or {}).items():
        if isinstance(spec, dict) and spec.get("default") is not None:
            out[name] = spec["default"]
    out.update(cfg.settings)
    return out
