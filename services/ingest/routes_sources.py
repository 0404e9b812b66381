"""Internal API (gateway only): the sources that may send events, and their write keys.

A key is shown once — in the answer to create or rotate — and stored only as a digest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from services.ingest.repository import Source, SourceExists, SourceStore, UnknownSource
from shared.service import require_internal_token

SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
router = APIRouter(prefix="/internal/v1/sources", dependencies=[Depends(require_internal_token)], tags=["internal"])
NameParam = Annotated[str, Path(pattern=SOURCE_NAME, description="the source's name")]


class SourceView(BaseModel):
    name: str
    enabled: bool
    key_hint: str | None = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, source: Source) -> SourceView:
        return cls(
            name=source.name,
            enabled=source.enabled,
            key_hint=source.key_hint,
            created_at=source.created_at,
            updated_at=source.updated_at,
        )


class SourceWithKey(SourceView):
    write_key: str = Field(description="shown only now; store it in the sending system")


class NewSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SOURCE_NAME, description="e.g. pos-shanghai, shop-web")


def _store(request: Request) -> SourceStore:
    store: SourceStore = request.app.state.sources
    return store


StoreDep = Annotated[SourceStore, Depends(_store)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such source"}}


def _unknown(name: str) -> HTTPException:
    return HTTPException(404, {"error": f"no source named {name!r}; create it with POST /internal/v1/sources"})


@router.get("", response_model=list[SourceView], summary="All sources and whether they may send")
async def list_sources(store: StoreDep) -> list[SourceView]:
    return [SourceView.of(source) for source in await store.list()]


@router.post(
    "",
    status_code=201,
    response_model=SourceWithKey,
    responses={409: {"description": "a source with that name exists"}},
    summary="Create a source and its first write key",
)
async def create_source(body: NewSource, store: StoreDep) -> SourceWithKey:
    try:
        source, key = await store.create(body.name)
    except SourceExists:
        raise HTTPException(
            409, {"error": f"source {body.name!r} exists; rotate its key instead of creating it again"}
        ) from None
    return SourceWithKey(**SourceView.of(source).model_dump(), write_key=key)


@router.get("/{name}", response_model=SourceView, responses=_NOT_FOUND, summary="One source")
async def get_source(name: NameParam, store: StoreDep) -> SourceView:
    try:
        return SourceView.of(await store.get(name))
    except UnknownSource:
        raise _unknown(name) from None


@router.post(
    "/{name}/rotate",
    response_model=SourceWithKey,
    responses=_NOT_FOUND,
    summary="Replace the source's write key; the old key stops working at once",
)
async def rotate_key(name: NameParam, store: StoreDep) -> SourceWithKey:
    try:
        source, key = await store.rotate(name)
    except UnknownSource:
        raise _unknown(name) from None
    return SourceWithKey(**SourceView.of(source).model_dump(), write_key=key)


@router.post("/{name}/disable", response_model=SourceView, responses=_NOT_FOUND, summary="Refuse the source's events")
async def disable_source(name: NameParam, store: StoreDep) -> SourceView:
    try:
        return SourceView.of(await store.set_enabled(name, False))
    except UnknownSource:
        raise _unknown(name) from None


@router.post(
    "/{name}/enable", response_model=SourceView, responses=_NOT_FOUND, summary="Accept the source's events again"
)
async def enable_source(name: NameParam, store: StoreDep) -> SourceView:
    try:
        return SourceView.of(await store.set_enabled(name, True))
    except UnknownSource:
        raise _unknown(name) from None
