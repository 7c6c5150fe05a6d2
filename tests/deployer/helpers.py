"""Steps several deployer tests share (the agents' side of the protocol is played by the tests themselves)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from aiot.agent.agent import AgentConfig, NodeAgent
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


async def joined_agent(live: LivePlatform, tmp_path: Path, api_port: int, name: str) -> NodeAgent:
    """A real node agent in this process, joined with a fresh token to the API served on `api_port`, started."""
    join = await live.client.post("/api/v1/nodes/join-tokens", headers=live.headers(Role.admin))
    agent = NodeAgent(
        AgentConfig(
            server=f"http://127.0.0.1:{api_port}",
            data_dir=tmp_path / "agent",
            join_token=join.json()["token"],
            name=name,
            capacity={"cpu": 4, "memory_mb": 8192},
            hidden_paths=(tmp_path / "data",),
            poll_interval=0.5,
            report_interval=0.5,
        )
    )
    await agent.start()
    return agent


async def first_prediction(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    limit_s: float = 150,
    check: Callable[[], None] | None = None,
) -> httpx.Response:
    """POST `body` to a model's stable URL until a replica answers 200 (503 while none is ready; anything else
    fails at once); `check` runs between tries (e.g. that the node's process is still alive)."""
    deadline = time.monotonic() + limit_s
    while (answer := await client.post(url, json=body, headers=headers)).status_code != 200:
        assert answer.status_code == 503, answer.text
        if check is not None:
            check()
        assert time.monotonic() < deadline, f"no replica became ready: {answer.text}"
        await asyncio.sleep(0.5)
    return answer
