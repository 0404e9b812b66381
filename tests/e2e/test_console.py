"""The operator console in a real browser (headless Chromium driven by Playwright) against the
whole stack started by the dev launcher: log in, find a customer, approve a touch, edit a
template and see the preview change — in both languages. Screenshots of every view are saved
under test-artifacts/console/.

Data enters as in production: events posted to ingest with the write key; the care plan whose
touches wait for approval is created through the gateway's API.
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import dev_stack

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = Path(os.environ.get("HUITOU_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
WRITE_KEY = "wk_console_e2e_write_key_0123456789"
ADMIN_KEY = "hk_console_e2e_admin_key_0123456789"
VIP = "cust-vip-01"  # the customer whose purchase waits for an operator's approval
CUSTOMERS = [
    ("王芳", "zh-CN"), ("李娜", "zh-CN"), ("张伟", "zh-CN"), ("刘洋", "zh-CN"), ("陈静", "zh-CN"), ("赵敏", "zh-CN"),
    ("孙磊", "zh-CN"), ("周杰", "zh-CN"), ("吴倩", "zh-CN"), ("徐明", "zh-CN"), ("马丽", "zh-CN"), ("朱峰", "zh-CN"),
    ("胡婷", "zh-CN"), ("Emma Wilson", "en"), ("Liam Chen", "en"), ("Olivia Zhang", "en"), ("Noah Li", "en"),
    ("Ava Wang", "en"), ("Mia Zhou", "en"), ("Lucas Wu", "en"), ("Sophia Lin", "en"), ("Ethan Ma", "en"),
]  # fmt: skip
VIP_GIFT_PLAN = {
    "name": "vip_gift",
    "description": "A thank-you gift after a purchase by a top customer; costly, so an operator approves it.",
    "trigger": {"event": {"types": ["purchase"]}},
    "audience": {"tiers": ["A"]},
    "delay": "PT2H",
    "channels": ["email"],
    "template": "post_purchase_follow_up",
    "priority": 70,
    "purpose": "transactional",
    "dedupe": {"per": "order"},
    "offer": {
        "by_tier": {
            "A": {"code": "GIFT-A", "value": 300, "description": {"zh-CN": "300 元礼品", "en": "a 300 CNY gift"}}
        },
        "approval_above": 100,
    },
}


@dataclass
class Stack:
    ports: dict[str, int]
    output: list[str]
    operator_key: str = ""
    pending_touch: str = ""

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def console(self) -> str:
        return self.url("gateway") + "/console/"

    def api(self, method: str, path: str, key: str = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, self.url("gateway") + "/api/v1" + path, headers=headers, timeout=30, **kwargs)


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def _event(kind: str, customer: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"console-{uuid.uuid4().hex}", "type": kind, "customer_id": customer,
            "occurred_at": at.isoformat(), "payload": payload}  # fmt: skip


def shop_history(now: datetime) -> list[dict[str, Any]]:
    """A small tea shop's year: every customer identified, consenting to email, buying 1–9 times;
    the VIP buys often and big, so the Pareto ranking makes them tier A."""
    rng = random.Random(42)
    events = []
    people = [(VIP, "林晓", "zh-CN"), *((f"cust-{n:03d}", name, loc) for n, (name, loc) in enumerate(CUSTOMERS, 1))]
    for customer, name, locale in people:
        email = f"{customer}@example.com"
        traits = {"name": name, "email": email, "locale": locale, "timezone": "Asia/Shanghai"}
        events.append(_event("identify", customer, now - timedelta(days=400), {"traits": traits}))
        consent = {"channel": "email", "purpose": "marketing", "granted": True}
        events.append(_event("consent", customer, now - timedelta(days=399), consent))
        orders = 9 if customer == VIP else rng.choice([1, 1, 2, 3, 4, 6])
        for k in range(orders):
            at = now - timedelta(days=rng.uniform(10, 350))
            amount = "2680.00" if customer == VIP else f"{rng.choice([39, 88, 128, 256, 520]):.2f}"
            item = {"sku": "oolong-250g", "name": "Oolong", "category": "tea", "quantity": 1}
            events.append(_event("purchase", customer, at, {"order_id": f"{customer}-o{k}", "amount": amount,
                                                            "items": [item]}))  # fmt: skip
    return events


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, chromium: Path) -> Iterator[Stack]:
    env = {"HUITOU_DEV_WRITE_KEY": WRITE_KEY, "HUITOU_DEV_ADMIN_KEY": ADMIN_KEY}
    with dev_stack(tmp_path_factory.mktemp("console-var"), env) as running:
        console_stack = Stack(running.ports, running.output)
        seed(console_stack)
        yield console_stack


def seed(stack: Stack) -> None:
    """Customers with a history, fitted scores, a care plan needing approval, and one pending touch."""
    now = datetime.now(UTC)
    posted = httpx.post(stack.url("ingest") + "/v1/events", json=shop_history(now), auth=(WRITE_KEY, ""), timeout=30)
    assert posted.status_code == 202 and not posted.json()["rejected"], posted.text

    def everyone_filed() -> bool:
        page = stack.api("GET", "/customers", params={"limit": 1})
        return page.status_code == 200 and page.json()["total"] == len(CUSTOMERS) + 1

    poll(everyone_filed, 90, "every customer file")
    refit = stack.api("POST", "/models/clv/refit", json={})
    assert refit.status_code == 200, refit.text
    poll(lambda: stack.api("GET", f"/customers/{VIP}").json()["scores"]["value_tier"] == "A", 60, "the VIP's tier A")

    operator = stack.api("POST", "/keys", json={"name": "crm-desk", "role": "operator"})
    assert operator.status_code == 201, operator.text
    stack.operator_key = operator.json()["key"]
    created = stack.api("POST", "/care-plans", key=stack.operator_key, json=VIP_GIFT_PLAN)
    assert created.status_code == 201, created.text

    def pending() -> str | None:
        # Outreach picks the new plan up within its refresh interval; until then a purchase
        # schedules nothing for it, so keep buying (each order is its own dedupe key).
        order = {"order_id": f"vip-{uuid.uuid4().hex[:8]}", "amount": "3200.00"}
        httpx.post(stack.url("ingest") + "/v1/events", json=_event("purchase", VIP, datetime.now(UTC), order),
                   auth=(WRITE_KEY, ""), timeout=30)  # fmt: skip
        for _ in range(15):
            found = stack.api("GET", "/touches", params={"status": "pending_approval", "customer_id": VIP}).json()
            if found["items"]:
                return str(found["items"][0]["touch_id"])
            time.sleep(0.4)
        return None

    stack.pending_touch = poll(pending, 90, "a touch waiting for approval")


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US", timezone_id="Asia/Shanghai")
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    opened.set_default_timeout(20_000)
    try:
        yield opened
    finally:
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
        context.close()
    assert not problems, problems


def log_in(page: Any, stack: Stack, key: str) -> None:
    page.goto(stack.console)
    page.get_by_test_id("login-key").fill(key)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("chart-tiers").wait_for()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_wrong_key_is_refused_and_the_right_one_opens_the_dashboard(page: Any, stack: Stack) -> None:
    page.goto(stack.url("gateway") + "/")
    page.wait_for_url("**/console/#/login")
    page.get_by_test_id("login-key").fill("hk_not_a_real_key")
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("login-error").filter(has_text="unknown API key").wait_for()
    shot(page, "01-login-refused")

    page.get_by_test_id("login-key").fill(stack.operator_key)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("who").filter(has_text="crm-desk (operator)").wait_for()
    for chart in ("chart-tiers", "chart-stages", "chart-churn", "chart-touches-per-day", "chart-lift",
                  "chart-touches-by-plan"):  # fmt: skip
        page.locator(f"[data-testid={chart}][data-loaded=true]").wait_for()
    tiers = page.get_by_test_id("chart-tiers")
    assert tiers.locator("svg rect").count() >= 3
    assert tiers.locator("text", has_text=re.compile(r"^A$")).count() == 1
    assert page.get_by_test_id("chart-stages").locator("svg rect").count() == 6  # the whole funnel
    assert page.get_by_test_id("chart-touches-by-plan").locator("text", has_text="vip_gift").count() == 1
    assert page.get_by_test_id("chart-touches-per-day").locator("svg circle").count() == 14
    assert page.get_by_test_id("nav-audit").is_hidden()  # an operator sees no admin views
    shot(page, "02-dashboard")


def test_find_a_customer_and_read_their_file(page: Any, stack: Stack) -> None:
    log_in(page, stack, stack.operator_key)
    page.get_by_test_id("nav-customers").click()
    page.get_by_test_id("filter-value_tier").select_option("A")
    page.get_by_test_id("filter-sort").select_option("-revenue")
    page.get_by_test_id("search-submit").click()
    first = page.locator("[data-testid^=customer-row-]").first
    first.wait_for()
    assert first.get_attribute("data-testid") == f"customer-row-{VIP}"  # the biggest spender comes first
    for row in page.locator("[data-testid^=customer-row-]").all():
        assert row.locator("td").nth(2).inner_text() == "A"
    shot(page, "03-customer-search")

    first.click()
    page.get_by_test_id("file-title").filter(has_text="林晓").wait_for()
    assert "Tier A" in page.get_by_test_id("file-tier").inner_text()
    timeline = page.get_by_test_id("timeline-entry")
    timeline.filter(has_text="Tier change").first.wait_for()
    assert timeline.filter(has_text="Order").count() >= 9
    assert timeline.filter(has_text="vip_gift").count() >= 1  # the pending touch, from outreach
    assert page.get_by_test_id("file-touches").locator("text=pending_approval").count() >= 1

    note = f"Prefers the corner seat and two sugars ({uuid.uuid4().hex[:6]})"
    page.get_by_test_id("new-note").fill(note)
    page.get_by_test_id("add-note").click()
    page.get_by_test_id("file-notes").filter(has_text=note).wait_for()
    assert "crm-desk" in page.get_by_test_id("file-notes").inner_text()  # the author is the key's name
    shot(page, "04-customer-file")


def test_approve_a_touch_waiting_for_approval(page: Any, stack: Stack) -> None:
    log_in(page, stack, stack.operator_key)
    page.get_by_test_id("nav-touches").click()
    pending = page.get_by_test_id("pending-touches")
    pending.get_by_test_id(f"touch-{stack.pending_touch}").filter(has_text="GIFT-A").wait_for()
    shot(page, "05-pending-touches")
    page.get_by_test_id(f"approve-{stack.pending_touch}").click()
    page.get_by_test_id("notice").filter(has_text="Touch approved").wait_for()
    pending.get_by_test_id(f"touch-{stack.pending_touch}").wait_for(state="detached")
    shot(page, "06-touch-approved")

    touch = stack.api("GET", f"/touches/{stack.pending_touch}").json()
    assert touch["status"] == "scheduled" and touch["approved_by"] == "crm-desk"
    audit = stack.api("GET", "/audit", params={"target": f"/api/v1/touches/{stack.pending_touch}/approve"}).json()
    (entry,) = audit["items"]
    assert entry["actor"] == "crm-desk" and entry["customer_id"] == VIP
    assert entry["before"]["status"] == "pending_approval" and entry["after"]["status"] == "scheduled"


def test_edit_a_template_and_see_the_preview_change(page: Any, stack: Stack) -> None:
    log_in(page, stack, stack.operator_key)
    page.get_by_test_id("nav-plans").click()
    page.get_by_test_id("template-post_purchase_follow_up").click()
    page.get_by_test_id("preview-customer").fill(VIP)
    english = page.get_by_test_id("preview-en")
    chinese = page.get_by_test_id("preview-zh-CN")
    english.filter(has_text="How is your order, 林晓?").wait_for()
    chinese.filter(has_text="林晓，收到的东西还满意吗？").wait_for()
    shot(page, "07-template-before")

    marker = f"tea house {uuid.uuid4().hex[:4]}"
    page.get_by_test_id("template-subject-en").fill(f"A note from the {marker}, {{{{ customer.display_name }}}}")
    page.get_by_test_id("template-subject-zh-CN").fill(f"{{{{ customer.display_name }}}}，来自{marker}的问候")
    # The preview follows the edit before anything is saved...
    english.filter(has_text=f"A note from the {marker}, 林晓").wait_for()
    chinese.filter(has_text=f"林晓，来自{marker}的问候").wait_for()
    draft = stack.api("GET", "/templates/post_purchase_follow_up").json()
    assert marker not in draft["locales"]["en"]["subject"], "a draft preview must not save"
    shot(page, "08-template-draft")
    page.get_by_test_id("template-save").click()
    page.get_by_test_id("template-version").filter(has_text="crm-desk").wait_for()
    english.filter(has_text=f"A note from the {marker}, 林晓").wait_for()
    shot(page, "08-template-after")

    broken = page.get_by_test_id("template-body-en")
    broken.fill("Hi {{ customer.display_name ")
    english.filter(has_text="syntax").wait_for()  # the draft's error shows in the preview at once
    page.get_by_test_id("template-save").click()
    page.get_by_test_id("template-problem").filter(has_text="syntax").wait_for()  # outreach's reason, verbatim
    stored = stack.api("GET", "/templates/post_purchase_follow_up").json()
    assert stored["updated_by"] == "crm-desk" and marker in stored["locales"]["en"]["subject"]


def test_the_console_speaks_chinese(page: Any, stack: Stack) -> None:
    log_in(page, stack, ADMIN_KEY)
    page.get_by_test_id("lang-switch").click()
    page.get_by_test_id("nav-dashboard").filter(has_text="概览").wait_for()
    page.locator("h2", has_text="价值层级分布").wait_for()
    for chart in ("chart-tiers", "chart-stages", "chart-churn", "chart-touches-per-day", "chart-lift",
                  "chart-touches-by-plan"):  # fmt: skip
        page.locator(f"[data-testid={chart}][data-loaded=true]").wait_for()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    shot(page, "09-dashboard-zh-CN")
    page.goto(f"{stack.console}#/customers/{VIP}")
    page.locator("h2", has_text="时间线").wait_for()
    page.get_by_test_id("timeline-entry").filter(has_text="层级变化").first.wait_for()
    shot(page, "10-customer-file-zh-CN")
    page.get_by_test_id("nav-audit").click()  # admins see the audit log
    page.get_by_test_id("audit-entries").filter(has_text="crm-desk").wait_for()
    shot(page, "11-audit-zh-CN")


def test_the_api_reference_renders_with_no_internet(page: Any, stack: Stack) -> None:
    """Swagger UI and ReDoc come from the gateway itself: no script, style or data from a CDN (only
    ReDoc's "powered by" logo is an outside image, and the page renders without it)."""
    gateway = stack.url("gateway")
    elsewhere: list[str] = []

    def only_the_gateway(route: Any) -> None:
        if route.request.url.startswith(gateway):
            route.continue_()
        else:  # a CDN or any other host: refused, as on an air-gapped network
            if route.request.resource_type != "image":
                elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_gateway)
    page.goto(gateway + "/docs")
    page.locator(".opblock-summary-path", has_text="/customers/{customer_id}").first.wait_for()
    assert page.locator(".opblock").count() > 20
    shot(page, "api-reference-swagger")
    page.goto(gateway + "/redoc")
    page.locator("h1", has_text="Huitou gateway").first.wait_for()
    page.get_by_text("/customers/{customer_id}", exact=False).first.wait_for(state="attached")
    assert elsewhere == []
