"""The one public route: unsubscribe links in care messages. In production the gateway proxies
``/public/v1/unsubscribe/{token}`` to here (only gateway and ingest take outside traffic).

Only ``POST`` unsubscribes. Mail filters and chat previews fetch links with ``GET`` before anyone
clicks, so a ``GET`` answers a page whose button posts back to the same address; mail clients
that honour ``List-Unsubscribe-Post`` (RFC 8058) post directly, in one click."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.outreach import repository
from services.outreach.routes.deps import RuntimeDep
from services.outreach.signing import BadToken, read_unsubscribe_token
from shared.contracts import Channel, Purpose
from shared.db import transaction

router = APIRouter(prefix="/public/v1", tags=["public"])

_PAGE = """<!doctype html><html lang="{lang}"><meta charset="utf-8"><title>{title}</title>
<body style="font-family:sans-serif;max-width:36em;margin:4em auto"><h1>{title}</h1><p>{text}</p>{form}</body></html>"""
# An empty action posts back to the address the page was fetched from, whichever host proxied it.
_CONFIRM = """<form method="post" action=""><button type="submit" style="font-size:1.1em;padding:.5em 1.5em">
Unsubscribe / 退订</button></form>"""


def _page(status: int, lang: str, title: str, text: str, form: str = "") -> HTMLResponse:
    body = _PAGE.format(lang=lang, title=html.escape(title), text=html.escape(text), form=form)
    return HTMLResponse(body, status_code=status)


def _claim(token: str, request: Request) -> tuple[str, Channel, Purpose] | HTMLResponse:
    try:
        claim = read_unsubscribe_token(request.app.state.settings.unsubscribe_secret, token)
        return claim.customer_id, Channel(claim.channel), Purpose(claim.purpose)
    except (BadToken, ValueError):
        return _page(
            400,
            "en",
            "Link not valid / 链接无效",
            "This unsubscribe link is damaged or incomplete; copy the whole link from the message. "
            "退订链接不完整，请从邮件中复制完整链接。",
        )


async def _unsubscribe(token: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    claimed = _claim(token, request)
    if isinstance(claimed, HTMLResponse):
        return claimed
    customer_id, channel, purpose = claimed
    now = datetime.now(UTC)
    async with transaction(runtime.sessions) as session:
        # Idempotent: a second click records the same refusal again (latest event time wins).
        await repository.record_consent(
            session, customer_id, channel.value, purpose.value, False, now, "unsubscribe_link", None
        )
    return _page(
        200,
        "en",
        "Unsubscribed / 已退订",
        f"You will receive no more {purpose.value} messages by {channel.value}. "
        f"你将不再通过 {channel.value} 收到营销消息。",
    )


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe page (link in a message)")
async def unsubscribe_get(token: str, request: Request) -> HTMLResponse:
    """Asks for confirmation and changes nothing: link scanners fetch with GET."""
    claimed = _claim(token, request)
    if isinstance(claimed, HTMLResponse):
        return claimed
    _, channel, purpose = claimed
    return _page(
        200,
        "en",
        "Unsubscribe? / 确认退订？",
        f"Press the button to receive no more {purpose.value} messages by {channel.value}. "
        f"点击按钮后，你将不再通过 {channel.value} 收到营销消息。",
        _CONFIRM,
    )


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe (RFC 8058 one-click)")
async def unsubscribe_post(token: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    return await _unsubscribe(token, request, runtime)
