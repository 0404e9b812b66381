"""The email a send writes by hand (``email_bytes``) reads back, through the standard library's
parser, exactly as the ``email`` package's own rendering of the same message does."""

from __future__ import annotations

from dataclasses import replace
from email import message_from_bytes
from email.policy import default

import pytest

from services.outreach.channels import OutboundMessage, SmtpConfig, build_email, email_bytes
from shared.contracts import Channel, Purpose

CONFIG = SmtpConfig(
    host="127.0.0.1", port=25, mail_from="Huitou 回头 <care@shop.example>", message_id_domain="shop.example"
)
MESSAGE = OutboundMessage(
    touch_id="t-123",
    customer_id="c-1",
    channel=Channel.EMAIL,
    address="wang@example.com",
    subject="王小明，感谢您的购买 — thank you",
    body="亲爱的王小明：\n\n感谢您在我们店购买。Thank you for your order.\n\n回头见！",
    plan="post_purchase_follow_up",
    purpose=Purpose.MARKETING,
    locale="zh-CN",
    unsubscribe_url="http://127.0.0.1:8000/v1/unsubscribe/abc.def",
)
HEADERS = ["From", "To", "Subject", "Message-ID", "X-Huitou-Touch-Id", "X-Huitou-Plan", "List-Unsubscribe",
           "List-Unsubscribe-Post", "Content-Type", "MIME-Version"]  # fmt: skip


@pytest.mark.parametrize(
    "message",
    [
        MESSAGE,
        replace(MESSAGE, subject="How is your oolong?", body="Hi Ann,\r\nhow is it going?\r\n"),
        replace(MESSAGE, subject="a long ascii subject that has to be folded " * 4, unsubscribe_url=None),
        replace(MESSAGE, subject="", body="no subject: the plan's name stands in"),
        replace(MESSAGE, subject="two\nlines", body="x" * 1500 + "\n一行太长了"),  # a line over SMTP's 998
        replace(MESSAGE, address="王@例子.中国"),  # not ASCII: the email package writes it
    ],
    ids=["chinese", "crlf-body", "long-ascii-subject", "no-subject", "overlong-line", "non-ascii-address"],
)
def test_hand_written_email_reads_back_like_the_email_package(message: OutboundMessage) -> None:
    ours = message_from_bytes(email_bytes(message, CONFIG), policy=default)
    theirs = message_from_bytes(build_email(message, CONFIG).as_bytes(), policy=default)
    for name in HEADERS:
        assert str(ours[name]) == str(theirs[name]), name
    assert ours.get_content() == theirs.get_content()
    assert str(ours["From"]) == "Huitou 回头 <care@shop.example>"
    assert str(ours["Subject"]) == " ".join((message.subject or message.plan).splitlines())


def test_every_line_fits_smtp_and_no_header_can_be_injected() -> None:
    raw = email_bytes(replace(MESSAGE, subject="hi\r\nBcc: everyone@example.com", body="y" * 5000), CONFIG)
    assert all(len(line) <= 998 for line in raw.split(b"\n"))
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Bcc"] is None and parsed["Content-Transfer-Encoding"] == "base64"
    with pytest.raises(ValueError, match="linefeed"):  # as before: such an address is not sent to
        email_bytes(replace(MESSAGE, address="a@example.com\nBcc: everyone@example.com"), CONFIG)
