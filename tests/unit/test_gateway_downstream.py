"""The gateway's client for the other services: what is retried, what passes through, and what
becomes a 502 or 504 (the services are replaced by scripted httpx transports)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from services.gateway.downstream import Downstream, ServiceRefused, ServiceTimeout, ServiceUnavailable
from shared.service import INTERNAL_TOKEN_HEADER

Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers each request with the next step: a response, or an exception to raise."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def downstream(script: Script | Handler, retries: int = 2, timeout: float = 1.0) -> Downstream:
    client = httpx.AsyncClient(transport=httpx.MockTransport(script))
    return Downstream(client, {"scoring": "http://scoring/"}, "token-123", retries, timeout=timeout)


def ok(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


async def test_get_sends_the_internal_token_and_query_and_returns_json() -> None:
    script = Script(ok({"customer_id": "c-1"}))
    body = await downstream(script).get("scoring", "/internal/v1/customers/c-1", [("tier", "A"), ("tier", "B")])
    assert body == {"customer_id": "c-1"}
    sent = script.requests[0]
    assert sent.headers[INTERNAL_TOKEN_HEADER] == "token-123"
    assert sent.url.path == "/internal/v1/customers/c-1"
    assert sent.url.params.get_list("tier") == ["A", "B"]


async def test_get_is_retried_through_connection_errors_and_503() -> None:
    script = Script(httpx.ConnectError("refused"), ok({"error": "starting"}, 503), ok([1]))
    reply = await downstream(script).call("GET", "scoring", "/x")
    assert reply.json() == [1] and len(script.requests) == 3


async def test_get_gives_up_after_the_retries_with_a_502() -> None:
    script = Script(*(ok({"error": "starting"}, 503) for _ in range(3)))
    with pytest.raises(ServiceUnavailable) as failed:
        await downstream(script).call("GET", "scoring", "/x")
    assert failed.value.message == "scoring failed (503): starting; try again shortly"
    assert failed.value.status == 502
    assert len(script.requests) == 3


async def test_an_internal_error_is_a_502_without_retrying_a_bug_or_repeating_its_details() -> None:
    script = Script(ok({"error": "KeyError: 'x' in line 12"}, 500), ok({}))
    with pytest.raises(ServiceUnavailable) as failed:
        await downstream(script).call("GET", "scoring", "/x")
    assert failed.value.message == "scoring failed (500); try again shortly"
    assert len(script.requests) == 1


async def test_a_write_is_not_retried_once_it_may_have_arrived() -> None:
    script = Script(ok({"error": "unavailable"}, 503), ok({}))
    with pytest.raises(ServiceUnavailable):
        await downstream(script).call("POST", "scoring", "/notes", body={"text": "hi"})
    assert len(script.requests) == 1
    assert script.requests[0].content == b'{"text":"hi"}'


async def test_a_write_is_retried_when_the_connection_never_opened() -> None:
    script = Script(httpx.ConnectError("refused"), ok({"id": 1}, 201))
    reply = await downstream(script).call("POST", "scoring", "/notes", body={})
    assert reply.status == 201 and len(script.requests) == 2


async def test_a_write_that_times_out_says_it_may_have_happened() -> None:
    script = Script(httpx.ReadTimeout("slow"), ok({}))
    with pytest.raises(ServiceTimeout) as timed_out:
        await downstream(script).call("POST", "scoring", "/notes", body={})
    assert timed_out.value.status == 504
    assert "may or may not have been applied" in timed_out.value.message
    assert len(script.requests) == 1


async def test_the_overall_deadline_holds_against_a_server_that_never_finishes() -> None:
    async def never(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    client = httpx.AsyncClient(transport=httpx.MockTransport(never))
    slow = Downstream(client, {"scoring": "http://scoring"}, "t", retries=1, timeout=0.1)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ServiceTimeout) as timed_out:
        await slow.call("GET", "scoring", "/x")
    assert asyncio.get_running_loop().time() - started < 1
    assert timed_out.value.message == "scoring did not answer in time; try again shortly"


async def test_a_slow_route_gets_the_slow_timeout_and_others_keep_the_everyday_one() -> None:
    async def refit(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)  # longer than the everyday timeout, well within the slow one
        return ok({"fitted": True})

    client = httpx.AsyncClient(transport=httpx.MockTransport(refit))
    scoring = Downstream(client, {"scoring": "http://scoring"}, "t", retries=0, timeout=0.1, slow_timeout=5)
    reply = await scoring.call("POST", "scoring", "/internal/v1/models/clv/refit", body={}, slow=True)
    assert reply.json() == {"fitted": True}
    with pytest.raises(ServiceTimeout) as timed_out:
        await scoring.call("POST", "scoring", "/internal/v1/models/clv/refit", body={})
    assert "did not answer within 0.1s" in timed_out.value.message


def test_the_refit_route_is_the_slow_one() -> None:
    from services.gateway.route_table import ROUTES

    assert [r.path for r in ROUTES if r.slow] == ["/models/clv/refit"]


async def test_client_errors_pass_through_as_the_service_phrased_them() -> None:
    problem = {"error": "invalid request", "problems": ["body.reason: Field required"]}
    reply = await downstream(Script(ok(problem, 422))).call("PUT", "scoring", "/tier-override", body={})
    assert (reply.status, reply.json()) == (422, problem)
    with pytest.raises(ServiceRefused) as refused:
        reply.ok()
    assert (refused.value.status, refused.value.body) == (422, problem)


async def test_a_domain_404_passes_through() -> None:
    reply = await downstream(Script(ok({"error": "no customer file for 'c-9'"}, 404))).call("GET", "scoring", "/c-9")
    assert reply.status == 404


async def test_a_route_the_service_does_not_serve_is_a_502_naming_the_mismatch() -> None:
    with pytest.raises(ServiceUnavailable) as missing:
        await downstream(Script(ok({"error": "Not Found"}, 404))).call("GET", "scoring", "/internal/v1/new-thing")
    assert "does not serve GET /internal/v1/new-thing" in missing.value.message


async def test_the_service_refusing_the_gateway_is_a_configuration_502_not_the_callers_401() -> None:
    with pytest.raises(ServiceUnavailable) as refused:
        await downstream(Script(ok({"error": "internal API: send the service token"}, 401))).call("GET", "scoring", "/")
    assert "HUITOU_INTERNAL_TOKEN" in refused.value.message


async def test_non_json_bodies_are_kept_as_they_are() -> None:
    page = httpx.Response(200, text="<p>unsubscribed</p>", headers={"content-type": "text/html"})
    reply = await downstream(Script(page)).call("GET", "scoring", "/public/v1/unsubscribe/t")
    assert reply.content == b"<p>unsubscribed</p>" and not reply.is_json and reply.json() is None
