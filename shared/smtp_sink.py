"""A local SMTP server for the dev stack: accepts every message, keeps it in a Maildir and logs
one line per message so the operator sees what Huitou sent.

``python -m shared.smtp_sink --port 1025 --maildir var/mail``
"""

from __future__ import annotations

import argparse
import email
import email.policy
import signal
import threading
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
            f"subject={message.get('Subject', '')!r}",
            flush=True,
        )
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    args.maildir.parent.mkdir(parents=True, exist_ok=True)
    controller = Controller(LoggingMailbox(args.maildir), hostname=args.host, port=args.port)
    controller.start()
    print(f"SMTP sink listening on {args.host}:{args.port}, keeping mail in {args.maildir}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
