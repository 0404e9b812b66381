"""A local SMTP server for the dev stack: accepts every message, keeps it in a Maildir and logs
one line per message so the operator sees what Huitou sent. Optionally it also lists the mail
over HTTP (``--http-port`` or ``HUITOU_SMTP_HTTP_PORT``): ``/`` is a page with the newest
messages, ``/messages`` the same as JSON, ``/messages/<key>`` one message's text.

``python -m shared.smtp_sink --port 1025 --maildir var/mail [--http-port 1080]``
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import json
import mailbox
import os
import signal
import threading
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


class LoggingMailbox(Mailbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        result: str = await super().handle_DATA(server, session, envelope)
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        print(
            f"received mail from={envelope.mail_from} to={','.join(envelope.rcpt_tos)} "
            f"subject={message.get('Subject', '')!r} message_id={message.get('Message-ID', '')}",
            flush=True,
        )
        return result


def list_messages(maildir: Path, limit: int = 200) -> list[dict[str, Any]]:
    """The newest messages in the Maildir, summarised (no bodies)."""
    if not maildir.exists():
        return []
    box = mailbox.Maildir(maildir, factory=None, create=False)
    entries: list[dict[str, Any]] = []
    for key in box.iterkeys():
        path = _path_of(maildir, key)
        if path is None:
            continue
        message = _parse(path)
        entries.append(
            {
                "key": key,
                "received": path.stat().st_mtime,
                "from": str(message.get("From", "")),
                "to": str(message.get("To", "")),
                "subject": str(message.get("Subject", "")),
                "message_id": str(message.get("Message-ID", "")),
                "plan": str(message.get("X-Huitou-Plan", "")),
            }
        )
    entries.sort(key=lambda e: e["received"], reverse=True)
    return entries[:limit]


def read_message(maildir: Path, key: str) -> EmailMessage | None:
    path = _path_of(maildir, key)
    return _parse(path) if path is not None else None


def _path_of(maildir: Path, key: str) -> Path | None:
    if not key or "/" in key or key.startswith("."):
        return None
    for sub in ("new", "cur"):
        for candidate in (maildir / sub).glob(f"{key}*"):
            return candidate
    return None


def _parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def serve_listing(host: str, port: int, maildir: Path) -> ThreadingHTTPServer:
    """Start the read-only HTTP listing in a daemon thread."""

    class Listing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                rows = "".join(
                    f"<tr><td>{html.escape(m['to'])}</td><td><a href='/messages/{html.escape(m['key'])}'>"
                    f"{html.escape(m['subject'])}</a></td><td>{html.escape(m['plan'])}</td>"
                    f"<td><code>{html.escape(m['message_id'])}</code></td></tr>"
                    for m in list_messages(maildir)
                )
                page = (
                    "<!doctype html><meta charset='utf-8'><title>Huitou dev mail</title>"
                    "<h1>Mail received by the dev SMTP sink</h1><table border=1 cellpadding=4>"
                    f"<tr><th>to</th><th>subject</th><th>plan</th><th>Message-ID</th></tr>{rows}</table>"
                )
                self._send(200, "text/html; charset=utf-8", page.encode())
            elif self.path == "/messages":
                self._send(200, "application/json", json.dumps(list_messages(maildir), ensure_ascii=False).encode())
            elif self.path.startswith("/messages/"):
                message = read_message(maildir, self.path.removeprefix("/messages/"))
                if message is None:
                    self._send(404, "text/plain; charset=utf-8", b"no such message")
                    return
                headers = "".join(f"{k}: {v}\n" for k, v in message.items())
                self._send(200, "text/plain; charset=utf-8", f"{headers}\n{_text_of(message)}".encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"try / or /messages")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Listing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=Path("var/mail"))
    parser.add_argument(
        "--http-port",
        type=int,
        default=int(os.environ.get("HUITOU_SMTP_HTTP_PORT", "0")) or None,
        help="also list received mail over HTTP on this port (default: HUITOU_SMTP_HTTP_PORT, else off)",
    )
    args = parser.parse_args()
    args.maildir.parent.mkdir(parents=True, exist_ok=True)
    controller = Controller(LoggingMailbox(args.maildir), hostname=args.host, port=args.port)
    controller.start()
    print(f"SMTP sink listening on {args.host}:{args.port}, keeping mail in {args.maildir}", flush=True)
    listing = None
    if args.http_port:
        try:
            listing = serve_listing(args.host, args.http_port, args.maildir)
            print(f"received mail listed at http://{args.host}:{args.http_port}/", flush=True)
        except OSError as error:  # the sink's job is SMTP: a taken HTTP port must not stop it
            print(f"mail listing not started on port {args.http_port}: {error}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    if listing is not None:
        listing.shutdown()
    controller.stop()


if __name__ == "__main__":
    main()
