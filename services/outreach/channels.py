"""Channel adapters: email over SMTP (aiosmtplib) and HMAC-signed webhooks (SMS, push, generic).

Every adapter sends in two steps so the dispatcher can record "sending" at the last safe
moment: ``prepare`` does everything that can fail harmlessly (connect, hand over the
envelope and the whole message body), ``commit`` crosses the point of no return. For SMTP that
point is the single ``.`` line that ends DATA — a server that loses the connection before it
discards the message — so the window in which a crash leaves the outcome unknown is one
write and one reply long.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx

from services.outreach.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, webhook_signature
from shared.contracts import Channel, Purpose

_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_LEADING_PERIOD = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class OutboundMessage:
    touch_id: str
    customer_id: str
    channel: Channel
    address: str
    subject: str
    body: str
    plan: str
    purpose: Purpose
    locale: str
    unsubscribe_url: str | None = None


class SendError(Exception):
    """A send that did not happen. ``transient``: worth retrying later."""

    transient = True


class PermanentSendError(SendError):
    transient = False


class OutcomeUnknown(SendError):
    """The point of no return was crossed but no answer came back: maybe delivered."""


class Prepared(Protocol):
    async def commit(self) -> str:
        """Cross the point of no return; returns the provider's receipt."""

    async def abort(self) -> None:
        """Give up before the point of no return: nothing is delivered."""


class ChannelAdapter(Protocol):
    resend_when_unsure: bool
    """True when the far side dedupes (Idempotency-Key): an unknown outcome may be resent."""

    async def prepare(self, message: OutboundMessage) -> Prepared: ...

    async def close(self) -> None: ...


# --- email ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    mail_from: str
    message_id_domain: str
    timeout: float = 10.0
    starttls: bool = False
    username: str | None = None
    password: str | None = None


def message_id(touch_id: str, domain: str) -> str:
    """Deterministic, so a duplicate of the same touch is recognisable by any mailbox."""
    return f"<{touch_id}@{domain}>"


def build_email(message: OutboundMessage, config: SmtpConfig) -> EmailMessage:
    """The email as the ``email`` package models it (what :func:`email_bytes` writes by hand)."""
    mail = EmailMessage()
    for name, value in _headers(message, config):
        mail[name] = value
    mail.set_content(message.body)
    return mail


def email_bytes(message: OutboundMessage, config: SmtpConfig) -> bytes:
    """The email as sent (``\n`` line ends): headers with non-ASCII text as RFC 2047 encoded
    words, folded; a UTF-8 text/plain body, 8bit, or base64 when a line is too long for SMTP.

    Written by hand because the ``email`` package's header parsing cost ~1.4 ms a message, a
    fifth of a send's CPU; an address that is not plain ASCII, or a header value with a line
    break, takes that package's path."""
    headers = _headers(message, config)
    if not (message.address.isascii() and _mailbox(config.mail_from).isascii()) or any(
        "\n" in value or "\r" in value for _, value in headers
    ):
        return build_email(message, config).as_bytes()  # which refuses a line break in a header
    body = message.body.replace("\r\n", "\n").replace("\r", "\n")
    raw = (body if body.endswith("\n") else body + "\n").encode()
    encoding = "8bit"
    if any(len(line) > 998 for line in raw.split(b"\n")):  # RFC 5321's limit for a line
        encoding, raw = "base64", base64.encodebytes(raw)
    headers += [
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", encoding),
        ("MIME-Version", "1.0"),
    ]
    head = "".join(f"{name}: {_header_value(name, value)}\n" for name, value in headers)
    return head.encode("ascii") + b"\n" + raw


def _headers(message: OutboundMessage, config: SmtpConfig) -> list[tuple[str, str]]:
    headers = [
        ("From", _mailbox(config.mail_from)),
        ("To", message.address),
        # A rendered subject is one line: a line break could otherwise start a header of its own.
        ("Subject", " ".join((message.subject or message.plan).splitlines())),
        ("Message-ID", message_id(message.touch_id, config.message_id_domain)),
        ("Date", email.utils.formatdate(localtime=False)),
        ("X-Huitou-Touch-Id", message.touch_id),
        ("X-Huitou-Plan", message.plan),
    ]
    if message.unsubscribe_url:
        headers.append(("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))  # RFC 8058 one-click
    return headers


@functools.lru_cache(maxsize=16)
def _mailbox(address: str) -> str:
    """``Name <addr>`` with a non-ASCII display name as an encoded word (the sender is fixed)."""
    name, addr = email.utils.parseaddr(address)
    return email.utils.formataddr((name, addr or address), charset="utf-8")


def _header_value(name: str, value: str) -> str:
    if value.isascii() and len(name) + len(value) + 2 <= 78:
        return value
    # Encoded words where needed, folded to 78 columns.
    return Header(value, "us-ascii" if value.isascii() else "utf-8", header_name=name).encode(linesep="\n")


class _SmtpPrepared:
    def __init__(self, adapter: SmtpAdapter, client: aiosmtplib.SMTP) -> None:
        self._adapter = adapter
        self._client = client

    async def commit(self) -> str:
        protocol = self._client.protocol
        if protocol is None:
            raise SendError("SMTP connection lost before the end of DATA")
        try:
            protocol.write(b".\r\n")
        except aiosmtplib.SMTPException as error:
            self._client.close()
            raise SendError(f"SMTP connection lost before the end of DATA: {error}") from error
        try:
            reply = await protocol.read_response(timeout=self._adapter.config.timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            self._client.close()
            raise OutcomeUnknown(f"no reply to the end of DATA: {error!r}") from error
        if reply.code != 250:
            self._client.close()
            error_class = SendError if 400 <= reply.code < 500 else PermanentSendError
            raise error_class(f"SMTP refused the message: {reply.code} {reply.message}")
        self._adapter.release(self._client)
        return reply.message

    async def abort(self) -> None:
        # Inside DATA the only way back is to drop the connection: the server discards the message.
        self._client.close()


class SmtpAdapter:
    """Email over SMTP, reusing a few open connections."""

    resend_when_unsure = False  # SMTP has no idempotency: an unknown outcome is not resent

    def __init__(self, config: SmtpConfig, *, pool_size: int = 8) -> None:
        self.config = config
        self._idle: list[aiosmtplib.SMTP] = []
        self._pool_size = pool_size
        self._envelope_from = email.utils.parseaddr(config.mail_from)[1] or config.mail_from

    def release(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < self._pool_size:
            self._idle.append(client)
        else:
            client.close()

    async def _connection(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                try:
                    await client.rset()
                    return client
                except aiosmtplib.SMTPException:
                    client.close()
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            timeout=config.timeout,
            start_tls=config.starttls,
            username=config.username,
            password=config.password,
        )
        await client.connect()
        return client

    async def prepare(self, message: OutboundMessage) -> Prepared:
        payload = email_bytes(message, self.config)
        payload = _LEADING_PERIOD.sub(b"..", _LINE_ENDINGS.sub(b"\r\n", payload))
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            client = await self._connection()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise SendError(f"SMTP server {self.config.host}:{self.config.port} unreachable: {error}") from error
        try:
            await client.mail(self._envelope_from)
            await client.rcpt(message.address)
            reply = await client.execute_command(b"DATA")
            if reply.code != 354:
                raise SendError(f"SMTP refused DATA: {reply.code} {reply.message}")
            assert client.protocol is not None
            client.protocol.write(payload)
        except aiosmtplib.SMTPRecipientRefused as error:
            client.close()
            raise PermanentSendError(f"SMTP refused the recipient: {error}") from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            client.close()
            raise SendError(f"SMTP failed before the end of DATA: {error}") from error
        except SendError:
            client.close()
            raise
        return _SmtpPrepared(self, client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await asyncio.wait_for(client.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


# --- webhooks ---------------------------------------------------------------------------------


def webhook_body(message: OutboundMessage) -> bytes:
    """Deterministic per touch, so a resend is byte-identical and trivially deduplicated."""
    return json.dumps(
        {
            "touch_id": message.touch_id,
            "customer_id": message.customer_id,
            "channel": message.channel.value,
            "to": message.address,
            "subject": message.subject,
            "body": message.body,
            "plan": message.plan,
            "purpose": message.purpose.value,
            "locale": message.locale,
            "unsubscribe_url": message.unsubscribe_url,
        },
        ensure_ascii=False,
        sort_keys=True,
    ).encode()


class _WebhookPrepared:
    def __init__(self, send: Callable[[], Awaitable[str]]) -> None:
        self._send = send

    async def commit(self) -> str:
        return await self._send()

    async def abort(self) -> None:
        return None


class WebhookAdapter:
    """POST the rendered touch to a provider, signed with HMAC-SHA256 and carrying the touch id
    as Idempotency-Key, so a resend after a crash is recognised by the provider."""

    resend_when_unsure = True

    def __init__(
        self, url: str, secret: str, client: httpx.AsyncClient, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = url
        self._secret = secret
        self._client = client
        self._clock = clock

    async def prepare(self, message: OutboundMessage) -> Prepared:
        body = webhook_body(message)

        async def send() -> str:
            headers = {
                "Content-Type": "application/json",
                IDEMPOTENCY_HEADER: message.touch_id,
                SIGNATURE_HEADER: webhook_signature(self._secret, body, int(self._clock())),
            }
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.ConnectError as error:
                raise SendError(f"webhook {self.url} unreachable: {error!r}") from error
            except httpx.HTTPError as error:
                raise OutcomeUnknown(f"webhook {self.url} gave no answer: {error!r}") from error
            if response.is_success:
                return f"{response.status_code} {response.text[:200]}"
            message_text = f"webhook answered {response.status_code}: {response.text[:300]}"
            if response.status_code in (408, 425, 429) or response.status_code >= 500:
                raise SendError(message_text)
            raise PermanentSendError(message_text)

        return _WebhookPrepared(send)

    async def close(self) -> None:
        return None
