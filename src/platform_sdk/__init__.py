"""The SDK that app and model code imports: `from platform_sdk import *`.

Everything here reads the workload config the node agent writes (`AIOT_WORKLOAD_CONFIG`; for local
development call `configure(path_or_dict)` first) and shares one NATS connection per process. The sync
functions work from plain scripts; the `a...` variants are the same calls for async code. See docs/sdk.md.

The original platform's SDK names (`get_sensor_data(i)`, ...) are here too, see compat.py.

This package must never import `aiot`: it runs inside workloads with only the workload's own credentials.
"""

from typing import Any

from platform_sdk.app import arun, delivery_stats, heartbeat, on_reading, run, stop
from platform_sdk.compat import (
    NotProvided,
    get_logger,
    get_mongo_db_database,
    get_mongo_db_uri,
    get_prediction,
    get_prediction_using_image,
    get_sensor_data,
    get_sensor_image,
    get_stream_image,
    send_controller_data,
    send_email_notification,
)
from platform_sdk.config import WorkloadConfig, merged_settings
from platform_sdk.devices import Controller, Sensor, controller, sensor
from platform_sdk.errors import (
    CommandRefused,
    CommandTimeout,
    ConfigError,
    ModelError,
    ModelUnavailable,
    NotOnPlatform,
    PlatformError,
    PlatformUnavailable,
    UnknownAlias,
)
from platform_sdk.models import amodel_call, amodel_call_batch, model_call, model_call_batch
from platform_sdk.runtime import config, configure
from platform_sdk.wire import Reading

__version__ = "1.0.0"


def settings() -> dict[str, Any]:
    """The app's settings: app.json defaults overridden by what the user chose when scheduling (a copy)."""
    return merged_settings(config())


__all__ = [
    "CommandRefused",
    "CommandTimeout",
    "ConfigError",
    "Controller",
    "ModelError",
    "ModelUnavailable",
    "NotProvided",
    "NotOnPlatform",
    "PlatformError",
    "PlatformUnavailable",
    "Reading",
    "Sensor",
    "UnknownAlias",
    "WorkloadConfig",
    "amodel_call",
    "amodel_call_batch",
    "arun",
    "config",
    "configure",
    "controller",
    "delivery_stats",
    "get_logger",
    "get_mongo_db_database",
    "get_mongo_db_uri",
    "get_prediction",
    "get_prediction_using_image",
    "get_sensor_data",
    "get_sensor_image",
    "get_stream_image",
    "heartbeat",
    "model_call",
    "model_call_batch",
    "on_reading",
    "run",
    "send_controller_data",
    "send_email_notification",
    "sensor",
    "settings",
    "stop",
]
