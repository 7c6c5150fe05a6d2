"""Model rollouts: move a model name to another version replica by replica, roll back, see its history.

Only the name's owner (or an admin) may change which version serves the name or read its rollouts (their
reasons quote replica ids and errors).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from aiot.api.deps import Ctx
from aiot.api.schemas import RolloutOut
from aiot.api.security import Allow, Principal
from aiot.artifacts import names
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer.rollouts import history, rollback_model, rollout_out, start_model_rollout
from aiot.deployer.service import workloads_changed
from aiot.errors import NotFound
from aiot.secrets_store import platform_secret
from aiot.services.contract import ServiceContext
from aiot.store.catalog import ModelPackage, PackageKind
from aiot.store.models import Role

router = APIRouter(tags=["rollouts"])
MODEL_WRITERS = Allow(Role.ai_developer, Role.admin)


class RolloutIn(BaseModel):
    version: str = Field(min_length=1, max_length=60, description="the uploaded version to serve, e.g. 1.1.0")


def _name(ctx: ServiceContext, name: str) -> str:
    with ctx.db.session() as session:
        if names.name_row(session, PackageKind.model, name) is None:
            raise NotFound(f"no model {name!r}", field="model")
    return name


@router.post("/models/{name}/rollout", response_model=RolloutOut)
async def rollout(ctx: Ctx, name: str, body: RolloutIn, principal: Principal = Depends(MODEL_WRITERS)) -> dict:
    """Start `version` beside the version serving now and replace its replicas one by one (capacity kept);
    rolled back by itself if a new replica crash-loops, fails, or is not ready in time."""
    with ctx.db.session() as session:
        names.check_may_change(session, PackageKind.model, _name(ctx, name), principal.user, "roll it out")
        try:
            model = ArtifactRepository.resolve(session, ModelPackage, f"{name}:{body.version}")
        except NotFound:
            raise NotFound(f"model {name} has no version {body.version!r}", field="version") from None
        out = rollout_out(start_model_rollout(session, platform_secret(ctx.settings), model, by=principal.user.id))
    await workloads_changed(ctx)
    return out


@router.post("/models/{name}/rollback", response_model=RolloutOut)
async def rollback(ctx: Ctx, name: str, principal: Principal = Depends(MODEL_WRITERS)) -> dict:
    """Undo the rollout in progress, or go back to the version the last finished rollout replaced."""
    with ctx.db.session() as session:
        names.check_may_change(session, PackageKind.model, _name(ctx, name), principal.user, "roll it back")
        out = rollout_out(rollback_model(session, platform_secret(ctx.settings), name, by=principal.user.id))
    await workloads_changed(ctx)
    return out


@router.get("/models/{name}/rollouts", response_model=list[RolloutOut])
def rollouts(ctx: Ctx, name: str, principal: Principal = Depends(MODEL_WRITERS)) -> list[dict]:
    """Every rollout of the name, oldest first, with its outcome."""
    with ctx.db.session() as session:
        names.check_may_change(session, PackageKind.model, _name(ctx, name), principal.user, "see its rollouts")
        return [rollout_out(r) for r in history(session, name)]
