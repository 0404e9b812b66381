"""What routes need, as FastAPI dependencies (built once in the lifespan, kept on app.state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scoring.clock import Clock
from services.scoring.engine import ModelStore
from services.scoring.maintenance import Maintenance
from services.scoring.operations import Operations
from services.scoring.settings import ScoringSettings


@dataclass
class ScoringContext:
    settings: ScoringSettings
    sessions: async_sessionmaker[AsyncSession]
    models: ModelStore
    clock: Clock
    maintenance: Maintenance
    operations: Operations


def get_context(request: Request) -> ScoringContext:
    context: ScoringContext = request.app.state.scoring
    return context


ContextDep = Annotated[ScoringContext, Depends(get_context)]
