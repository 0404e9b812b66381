"""The population model (CLV parameters and the other population statistics): read, refit."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException

from services.scoring import repository
from services.scoring.deps import ContextDep
from services.scoring.population import NotEnoughData
from services.scoring.views import ModelView, RefitRequest, model_view
from shared.service import require_internal_token

router = APIRouter(prefix="/internal/v1/models", dependencies=[Depends(require_internal_token)], tags=["models"])


async def _view(context: ContextDep) -> ModelView:
    model = await context.models.current()
    if model is None or model.id is None:
        raise HTTPException(404, {"error": "no model fitted yet; POST /internal/v1/models/clv/refit"})
    async with context.sessions() as session:
        _, done = await repository.rescore_progress(session, model.id)
    return model_view(model, rescored=done is not None)


@router.get("/clv", response_model=ModelView, summary="The CLV parameters and population statistics in force")
async def current_model(context: ContextDep) -> ModelView:
    return await _view(context)


@router.post("/clv/refit", response_model=ModelView, summary="Refit now; returns once the new parameters are in force")
async def refit(context: ContextDep, body: RefitRequest | None = None) -> ModelView:
    as_of = body.as_of if body else None
    if as_of is not None and as_of > datetime.now(UTC):
        raise HTTPException(422, {"error": f"as_of {as_of.isoformat()} is in the future; give a past moment or none"})
    try:
        model = await context.maintenance.refit(as_of=as_of, trigger="on_demand")
    except NotEnoughData as error:
        raise HTTPException(409, {"error": f"cannot fit yet: {error}"}) from None
    assert model.id is not None
    return model_view(model, rescored=False)
