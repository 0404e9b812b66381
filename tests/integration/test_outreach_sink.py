"""The dev SMTP sink shows the operator what was sent: a log line per message and an HTTP listing."""

from __future__ import annotations

import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx

from tests.support import eventually, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def start_sink(smtp_port: int, http_port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    with open(tmp_path / "sink.log", "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.smtp_sink",
                "--port",
                str(smtp_port),
                "--maildir",
                str(tmp_path / "mail"),
                "--http-port",
                str(http_port),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_the_sink_keeps_mail_and_lists_it_over_http(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    log = tmp_path / "sink.log"
    sink = start_sink(smtp_port, http_port, tmp_path)
    web = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}")
    try:
        wait_for_port(smtp_port)
        wait_for_port(http_port)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "care@huitou.local", "li@example.cn", "生日快乐"
        message["Message-ID"] = "<touch-1@huitou.local>"
        message["X-Huitou-Plan"] = "birthday"
        message.set_content("祝你生日快乐！")
        await aiosmtplib.send(message, hostname="127.0.0.1", port=smtp_port)

        async def listed() -> list | None:
            return (await web.get("/messages")).json() or None

        [entry] = await eventually(listed, timeout=10, what="the message in the listing")
        assert entry["subject"] == "生日快乐" and entry["message_id"] == "<touch-1@huitou.local>"
        assert entry["plan"] == "birthday"
        assert "生日快乐" in (await web.get("/")).text
        one = await web.get(f"/messages/{entry['key']}")
        assert one.status_code == 200 and "祝你生日快乐" in one.text
        assert (await web.get("/messages/..%2Fetc")).status_code == 404

        async def logged() -> bool:
            return "message_id=<touch-1@huitou.local>" in log.read_text()

        await eventually(logged, timeout=5, what="the sink's log line")
    finally:
        await web.aclose()
        sink.terminate()
        sink.wait(10)
