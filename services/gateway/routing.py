"""The declarative composition layer: a route table row says who may call a public path and which
service answers it; one generic forwarder does the rest.

The forwarder passes query parameters and JSON bodies through, passes a service's 4xx body
through unchanged (it tells the caller what to fix), turns 5xx, timeouts and unreachable
services into 502/504 (``downstream.py``), retries only what is safe to retry, and records every
write in the audit log with the state before (a GET of the resource, where it has one) and
after (the service's answer).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.gateway import audit
from services.gateway.auth import Caller, Role, limit_public, require
from services.gateway.context import Gateway, get_gateway
from services.gateway.downstream import DownstreamFailure, Reply, ServiceRefused

API_PREFIX = "/api/v1"
PATH_PARAM_MAX = 200


class ErrorBody(BaseModel):
    """Every error answer: what went wrong and, for invalid input, each problem."""

    error: str
    problems: list[str] | None = None


def error_responses(*, public: bool = False, write: bool = False) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "no such resource"},
        422: {"model": ErrorBody, "description": "invalid input; `problems` lists each field to fix"},
        429: {"model": ErrorBody, "description": "rate limit exceeded; retry after `Retry-After` seconds"},
        502: {"model": ErrorBody, "description": "the service that owns this resource is unavailable"},
        504: {"model": ErrorBody, "description": "the service that owns this resource did not answer in time"},
    }
    if not public:
        responses[401] = {"model": ErrorBody, "description": "no API key, or an unknown one"}
        responses[403] = {"model": ErrorBody, "description": "the key is disabled or its role is too low"}
    if write:
        responses[409] = {"model": ErrorBody, "description": "the change conflicts with the resource's state"}
    return responses


@dataclass(frozen=True)
class QueryParam:
    """A documented query parameter; the forwarder passes the whole query string through anyway."""

    name: str
    type: Any = str
    description: str = ""
    many: bool = False


@dataclass(frozen=True)
class Route:
    """One public route of the gateway and where it goes."""

    resource: str  # OpenAPI tag; one APIRouter per resource
    method: str
    path: str  # public, below /api/v1 (or absolute when ``prefix`` is "")
    role: Role | None  # None: public, no API key (rate limited per client address)
    service: str
    target: str  # the service's path; ``{name}`` placeholders are filled from the public path
    summary: str
    description: str = ""
    query: tuple[QueryParam, ...] = ()
    body: Any = None  # the documented request body type
    response: Any = None  # the documented response type
    status_code: int = 200
    idempotent: bool | None = None  # default: GET and HEAD
    audited: bool | None = None  # default: every method but GET and HEAD
    before: str | None = None  # the service's GET for the audit's 'before' state
    before_field: str | None = None  # keep only this field of it (e.g. the scores of a customer file)
    prefix: str = API_PREFIX
    body_required: bool = True
    # Where the owning service reads who acted: ("body" or "query", field name). The gateway
    # fills in the API key's name there, so nobody can act under another name.
    actor: tuple[str, str] | None = None
    response_class: type[Response] | None = None  # for answers that are not JSON
    # The service answers only after heavy work (a model refit over the whole population): bounded
    # by the gateway's slow-call timeout instead of the everyday one.
    slow: bool = False

    @property
    def public_path(self) -> str:
        return self.prefix + self.path

    @property
    def is_idempotent(self) -> bool:
        return self.method in {"GET", "HEAD"} if self.idempotent is None else self.idempotent

    @property
    def is_audited(self) -> bool:
        return self.method not in {"GET", "HEAD"} if self.audited is None else self.audited

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{") and part.endswith("}")]

    def fill(self, template: str, values: Mapping[str, Any]) -> str:
        return template.format(**{name: encode_segment(str(values[name])) for name in self.path_params})


def encode_segment(value: str) -> str:
    """One path segment, percent-encoded so that no id can change which route it reaches."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if set(value) <= {"."} else encoded


def build_routers(routes: Iterable[Route]) -> list[APIRouter]:
    """One APIRouter per resource, in the order resources first appear in the table."""
    routers: dict[str, APIRouter] = {}
    for route in routes:
        router = routers.setdefault(route.resource, APIRouter(tags=[route.resource]))
        router.add_api_route(
            route.public_path,
            make_endpoint(route),
            methods=[route.method],
            summary=route.summary,
            description=_describe(route),
            status_code=route.status_code,
            response_model=route.response,
            responses=error_responses(public=route.role is None, write=route.is_audited),
            name=_operation_name(route),
            operation_id=_operation_name(route),
            openapi_extra={"x-required-role": route.role.value if route.role else "none"},
            response_class=route.response_class or JSONResponse,
        )
    return list(routers.values())


def make_endpoint(route: Route) -> Callable[..., Awaitable[Response]]:
    """An endpoint whose signature FastAPI reads for auth, path, query and body documentation."""

    async def endpoint(request: Request, **kwargs: Any) -> Response:
        gateway: Gateway = kwargs["gateway"]
        caller: Caller | None = kwargs.get("caller")
        body = await _json_body(request) if route.body is not None else None
        return await forward(gateway, route, request, caller, body)

    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter(
            "gateway", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Gateway, Depends(get_gateway)]
        ),
    ]
    if route.role is None:
        parameters.append(
            inspect.Parameter(
                "public", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[None, Depends(limit_public)]
            )
        )
    else:
        parameters.append(
            inspect.Parameter(
                "caller", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Caller, require(route.role)]
            )
        )
    segment: Any = Annotated[str, Path(min_length=1, max_length=PATH_PARAM_MAX)]
    for name in route.path_params:
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=segment))
    for param in route.query:
        kind: Any = list[param.type] if param.many else param.type  # type: ignore[name-defined]
        annotation: Any = Annotated[kind | None, Query(description=param.description or None)]
        parameters.append(
            inspect.Parameter(param.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)
        )
    if route.body is not None:
        default = inspect.Parameter.empty if route.body_required else None
        body: Any = Annotated[route.body if route.body_required else route.body | None, Body()]
        parameters.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body, default=default))
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = _operation_name(route)
    return endpoint


async def forward(gateway: Gateway, route: Route, request: Request, caller: Caller | None, body: Any) -> Response:
    values = request.path_params
    target = route.fill(route.target, values)
    params = list(request.query_params.multi_items())
    if caller is not None and route.actor is not None:
        where, field = route.actor
        if where == "query":
            params = [(name, value) for name, value in params if name != field] + [(field, caller.name)]
        else:
            body = {**(body if isinstance(body, dict) else {}), field: caller.name}

    def send() -> Awaitable[Reply]:
        return gateway.downstream.call(
            route.method,
            route.service,
            target,
            params=params,
            body=body,
            idempotent=route.is_idempotent,
            slow=route.slow,
        )

    reply = await (_audited(gateway, route, request, caller, send) if caller and route.is_audited else send())
    media_type = reply.content_type if reply.content else None
    return Response(reply.content, reply.status, headers=reply.headers or None, media_type=media_type)


async def _audited(
    gateway: Gateway, route: Route, request: Request, caller: Caller, send: Callable[[], Awaitable[Reply]]
) -> Reply:
    """Run a write and record it, whatever its outcome: refused (4xx), failed (502) or unknown (504).
    When the 'before' cannot be read the service is down, and the write is not sent at all."""
    before = None
    try:
        before = await _before(gateway, route, request.path_params)
        reply = await send()
    except DownstreamFailure as failure:
        await _record(gateway, route, request, caller, failure.status, before, None)
        raise
    after = reply.json() if reply.status < 400 else None
    await _record(gateway, route, request, caller, reply.status, before, after)
    return reply


async def _json_body(request: Request) -> Any:
    if not await request.body():
        return None
    return await request.json()


async def _before(gateway: Gateway, route: Route, values: Mapping[str, Any]) -> Any:
    """The resource as it was; absent (404) is a valid 'before' for a write that creates it."""
    if route.before is None:
        return None
    try:
        state = await gateway.downstream.get(route.service, route.fill(route.before, values))
    except ServiceRefused as refused:
        if refused.status == 404:
            return None
        raise
    if route.before_field is not None and isinstance(state, dict):
        return state.get(route.before_field)
    return state


async def _record(
    gateway: Gateway, route: Route, request: Request, caller: Caller, status: int, before: Any, after: Any
) -> None:
    customer_id = request.path_params.get("customer_id") or _customer_of(after) or _customer_of(before)
    await audit.record(
        gateway.sessions,
        actor=caller.name,
        action=f"{route.method} {route.public_path}",
        target=request.url.path,
        status=status,
        customer_id=customer_id,
        before=before,
        after=after,
    )


def _customer_of(state: Any) -> str | None:
    if isinstance(state, dict) and isinstance(state.get("customer_id"), str):
        return str(state["customer_id"])
    return None


def _describe(route: Route) -> str:
    who = "No API key needed." if route.role is None else f"Requires the **{route.role}** role (or higher)."
    parts = [route.description, who]
    if route.is_audited and route.role is not None:
        parts.append("Recorded in the audit log.")
    return "\n\n".join(p for p in parts if p)


def _operation_name(route: Route) -> str:
    words = [w.strip("{}") for w in route.path.strip("/").replace("-", "_").split("/") if w]
    return "_".join([route.method.lower(), *words])
