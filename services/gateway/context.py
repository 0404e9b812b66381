"""What a gateway request handler needs, built once in the lifespan and handed out per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.downstream import Downstream
from services.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class Gateway:
    settings: GatewaySettings
    sessions: async_sessionmaker[AsyncSession]
    downstream: Downstream


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
