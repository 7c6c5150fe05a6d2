"""The tokens that open workload ports: one per model, one per web-app instance, derived from the platform secret.

Why derived and not stored: like the workloads' NATS passwords, nothing secret lands in the database, and
every control-plane process computes the same value. A model's token is keyed by the model id (not by the
deployment or a generation) so a running app bound to the model keeps working when the model is redeployed
or scaled; it changes with the platform secret. An instance's gateway token is keyed by the instance id.

Who gets them (see `assignment`): a replica gets its model's token as `serve.token`; an app gets each bound
model's token as `models.<alias>.token` and, when it is a web app, its own gateway token as `serve.token`;
the control plane uses them for its own calls (`POST /models/{ref}/predict`, the app gateway). The header
names are copied in `platform_sdk.endpoint_auth` (tests check they agree).
"""

from __future__ import annotations

from aiot.secrets_store import derive_password

MODEL_TOKEN_HEADER = "authorization"
"""Model calls carry `Authorization: Bearer <model token>`."""
GATEWAY_TOKEN_HEADER = "x-aiot-gateway-token"
"""Requests the app gateway forwards to an app's port carry this header with the instance's token."""


def model_token(secret: bytes, model_id: str) -> str:
    """The token a replica of `model_id` requires."""
    return derive_password(secret, "model-endpoint", model_id)


def model_auth_header(secret: bytes, model_id: str) -> dict[str, str]:
    """Headers for a control-plane call to a replica of `model_id`."""
    return {MODEL_TOKEN_HEADER: f"Bearer {model_token(secret, model_id)}"}


def gateway_token(secret: bytes, instance_id: str) -> str:
    """The token an app instance's web port requires: only the gateway (and the app itself) know it."""
    return derive_password(secret, "app-gateway", instance_id)


def gateway_headers(secret: bytes, instance_id: str) -> dict[str, str]:
    """What the app gateway adds to each request it forwards to `instance_id`'s port."""
    return {GATEWAY_TOKEN_HEADER: gateway_token(secret, instance_id)}
