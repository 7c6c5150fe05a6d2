"""The tokens a test needs to call a workload's port directly, as the platform derives them from its secret."""

from __future__ import annotations

from pathlib import Path

from aiot.deployer.endpoint_tokens import GATEWAY_TOKEN_HEADER, gateway_token, model_token


def platform_secret_of(data_dir: Path) -> bytes:
    """The secret a platform with this data dir uses (secret.key, as aiot.secrets_store reads it)."""
    return (data_dir / "secret.key").read_text().strip().encode()


def model_headers(data_dir: Path, model_id: str) -> dict[str, str]:
    """What the control plane sends to a replica of `model_id`."""
    return {"Authorization": f"Bearer {model_token(platform_secret_of(data_dir), model_id)}"}


def gateway_headers_of(data_dir: Path, instance_id: str) -> dict[str, str]:
    """What the app gateway sends to the port of app instance `instance_id`."""
    return {GATEWAY_TOKEN_HEADER: gateway_token(platform_secret_of(data_dir), instance_id)}
