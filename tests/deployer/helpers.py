"""Steps several deployer tests share (the agents' side of the protocol is played by the tests themselves)."""

from __future__ import annotations

from pathlib import Path

from aiot.artifacts.packing import zip_folder
from aiot.store.models import Role
from tests.support.live import LivePlatform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def deploy_comfort(live: LivePlatform, tmp_path: Path, replicas: int) -> str:
    """The AI developer pushes the comfort sample and deploys it with `replicas`; returns the model id."""
    archive = zip_folder(EXAMPLES / "models/comfort", tmp_path / "comfort.zip")
    model_id = (
        await live.client.post("/api/v1/models", content=archive.read_bytes(), headers=live.headers(Role.ai_developer))
    ).json()["id"]
    deployed = await live.client.post(
        f"/api/v1/models/{model_id}/deploy", json={"replicas": replicas}, headers=live.headers(Role.ai_developer)
    )
    assert deployed.status_code == 201, deployed.text
    return model_id
