"""The route table is consistent, and every row points at an operation its service really serves
(checked against the services' own OpenAPI documents, so a renamed internal route fails here)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

from services.gateway.auth import Role
from services.gateway.route_table import ROUTES
from services.gateway.routing import Route, encode_segment
from services.ingest.api import create_app as create_ingest
from services.outreach.api import create_app as create_outreach
from services.scoring.api import create_app as create_scoring

PLACEHOLDER = re.compile(r"\{([^}]+)\}")


@cache
def served(service: str) -> set[tuple[str, str]]:
    """(METHOD, path with every parameter as {}) for each operation the service's app serves."""
    app = {"scoring": create_scoring, "outreach": create_outreach, "ingest": create_ingest}[service]()
    spec: dict[str, Any] = app.openapi()
    return {(method.upper(), PLACEHOLDER.sub("{}", path)) for path, ops in spec["paths"].items() for method in ops}


def _id(route: Route) -> str:
    return f"{route.method} {route.public_path}"


def test_each_public_route_appears_once() -> None:
    seen = [(r.method, r.public_path) for r in ROUTES]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("route", ROUTES, ids=_id)
def test_the_service_serves_what_the_row_forwards_to(route: Route) -> None:
    assert (route.method, PLACEHOLDER.sub("{}", route.target)) in served(route.service)
    if route.before is not None:
        assert ("GET", PLACEHOLDER.sub("{}", route.before)) in served(route.service)


@pytest.mark.parametrize("route", ROUTES, ids=_id)
def test_every_placeholder_comes_from_the_public_path(route: Route) -> None:
    for template in (route.target, route.before or ""):
        assert set(PLACEHOLDER.findall(template)) <= set(route.path_params), template


@pytest.mark.parametrize("route", ROUTES, ids=_id)
def test_reads_are_retried_and_not_audited_writes_are_audited(route: Route) -> None:
    if route.method == "GET":
        assert route.is_idempotent and not route.is_audited
    elif route.role is not None and not route.public_path.endswith("/preview"):  # a render changes nothing
        assert route.is_audited, "a write must leave a trace in the audit log"


def test_only_the_unsubscribe_link_goes_without_a_key() -> None:
    public = [r for r in ROUTES if r.role is None]
    assert {r.public_path for r in public} == {"/public/v1/unsubscribe/{token}"}
    assert all(r.role in set(Role) for r in ROUTES if r.role is not None)


def test_secrets_and_keys_are_admin_business() -> None:
    for route in ROUTES:
        if route.public_path.startswith(("/api/v1/sources", "/api/v1/models/clv/refit")):
            assert route.role is Role.ADMIN, _id(route)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("cust-42", "cust-42"),
        ("a/b", "a%2Fb"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("a.b", "a.b"),
        ("李 雷", "%E6%9D%8E%20%E9%9B%B7"),
        ("?x=1#y", "%3Fx%3D1%23y"),
    ],
)
def test_an_id_cannot_change_which_route_it_reaches(value: str, encoded: str) -> None:
    assert encode_segment(value) == encoded
