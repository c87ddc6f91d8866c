"""The mail senders against real local servers: SmtpSender -> SmtpSink over a socket, and
AcsSender with the real azure-communication-email client -> the local ACS e-mail fake."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import cache
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from azure.communication.email import EmailClient
from azure.core.credentials import AzureKeyCredential

from core.change_report import change_report
from core.prefixes import PrefixParser
from devstack.acs_fake import AcsFake
from devstack.smtp_sink import SmtpSink
from devstack.tcp_ports import free_port, port_is_open
from notifier.email_render import render_email
from notifier.mail import AcsSender, PermanentMailError, SmtpSender, TransientMailError, acs_sender_from
from notifier.recipients import Recipient
from runtime.snapshot_files import load_snapshot
from tests.conftest import ROOT, snapshot_path

pytestmark = pytest.mark.integration

PARSER = PrefixParser()
SENDER = "servicetags@example.org"


@cache
def _report() -> str:
    old, new = (load_snapshot(snapshot_path(cn), PARSER) for cn in (347, 360))
    return json.dumps(change_report(old, new, region="francecentral", parser=PARSER))


def report() -> dict:
    return json.loads(_report())


def email(key: str = "reports/francecentral/a.json|net@example.com") -> EmailMessage:
    return render_email(
        report(),
        sender=SENDER,
        recipient=Recipient("net@example.com", "Network team"),
        message_id=key,
        blob_name="reports/francecentral/a.json",
    )


def parse_eml(path: Path) -> EmailMessage:
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# -- SMTP -----------------------------------------------------------------------------------


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "outbox") as running:
        yield running


def test_smtp_message_arrives_in_the_sink_as_an_eml_file_that_parses_back(sink):
    sent = email()
    provider_id = SmtpSender("127.0.0.1", sink.port, timeout=5).send(sent)

    (eml,) = sink.messages()
    received = parse_eml(eml)
    assert provider_id == sent["Message-ID"] == received["Message-ID"]
    assert received["Subject"] == str(sent["Subject"])
    assert received["Subject"].startswith("[servicetags] francecentral: 4 changed tags; +14/-12 prefixes")
    assert received["To"] == "Network team <net@example.com>"
    assert received["X-Servicetags-Report"] == "reports/francecentral/a.json"
    text = received.get_body(("plain",)).get_content()
    html = received.get_body(("html",)).get_content()
    assert "    48.220.0.0/17" in text.splitlines()  # SMTP delivers CRLF line ends
    assert "<code>48.220.0.0/17</code>" in html
    (attachment,) = list(received.iter_attachments())
    assert attachment.get_filename() == "servicetags-report-francecentral-347-360.json"
    assert json.loads(attachment.get_payload(decode=True)) == report()


def test_sink_keeps_the_bytes_exactly_as_sent_under_a_content_addressed_name(sink):
    raw = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: raw\r\n\r\n.leading dot\r\nend\r\n"
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
        client.sendmail("a@example.org", ["b@example.com"], raw)
    (eml,) = sink.messages()
    assert eml.read_bytes() == raw
    stamp, counter, digest = eml.stem.split("-")
    assert stamp.endswith("Z") and counter == "000001" and len(digest) == 12
    assert not list(eml.parent.glob("*.tmp"))


def test_starttls_requested_but_not_offered_is_permanent(sink):
    with pytest.raises(PermanentMailError, match="STARTTLS"):
        SmtpSender("127.0.0.1", sink.port, starttls=True, timeout=5).send(email())
    assert sink.messages() == []


def test_sink_down_is_transient_and_the_restarted_sink_on_the_same_port_takes_the_mail(sink):
    sender = SmtpSender("127.0.0.1", sink.port, timeout=5)
    port = sink.port
    sink.stop()
    assert not port_is_open("127.0.0.1", port)
    with pytest.raises(TransientMailError, match=f"SMTP 127.0.0.1:{port}: ConnectionRefusedError"):
        sender.send(email())

    sink.start()
    assert sink.port == port
    sender.send(email())
    (eml,) = sink.messages()
    assert parse_eml(eml)["Message-ID"] == email()["Message-ID"]


def test_nothing_listening_at_all_is_transient():
    with pytest.raises(TransientMailError):
        SmtpSender("127.0.0.1", free_port(), timeout=5).send(email())


class RefusingHandler:
    """An SMTP server that answers every RCPT TO with a fixed reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return self.reply


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("550 5.1.1 no such user", PermanentMailError),
        ("451 4.3.0 try again later", TransientMailError),
    ],
)
def test_smtp_recipient_refusals_are_classified_by_reply_code(reply, error):
    loop = asyncio.new_event_loop()
    port = free_port()
    controller = Controller(RefusingHandler(reply), loop=loop, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(error, match=reply.split()[0]):
            SmtpSender("127.0.0.1", port, timeout=5).send(email())
    finally:
        controller.stop()
        loop.close()


def test_sink_runs_as_a_process_until_sigterm_and_reports_its_port(tmp_path):
    state_file = tmp_path / "state" / "smtp.json"
    outbox = tmp_path / "outbox"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.smtp_sink",
            "--outbox",
            str(outbox),
            "--state-file",
            str(state_file),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not state_file.exists():
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the sink did not write its state file"
            time.sleep(0.05)
        state = json.loads(state_file.read_text())
        assert state["pid"] == process.pid and Path(state["outbox"]) == outbox.resolve()
        SmtpSender(state["host"], state["port"], timeout=5).send(email())
        assert len(list(outbox.glob("*.eml"))) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr.decode()
    assert not port_is_open("127.0.0.1", state["port"])


# -- Azure Communication Services Email ------------------------------------------------------


@pytest.fixture
def acs(tmp_path: Path) -> Iterator[AcsFake]:
    with AcsFake(tmp_path / "acs") as fake:
        yield fake


def client_for(fake: AcsFake, key: str | None = None) -> EmailClient:
    # Tiny backoff and a short poll interval keep retries fast; the fake sends retry-after 0.
    return EmailClient(
        fake.url, AzureKeyCredential(key or fake.access_key), retry_backoff_factor=0.01, polling_interval=0.05
    )


@pytest.fixture
def acs_sender(acs: AcsFake) -> Iterator[AcsSender]:
    sender = AcsSender(client_for(acs), timeout=20)
    yield sender
    sender.close()


def test_acs_message_is_stored_with_subject_recipients_and_attachment(acs, acs_sender):
    sent = email()
    operation_id = acs_sender.send(sent)

    (stored,) = acs.messages
    assert stored["senderAddress"] == SENDER
    assert stored["recipients"]["to"] == [{"address": "net@example.com", "displayName": "Network team"}]
    assert stored["content"]["subject"] == str(sent["Subject"])
    assert "    48.220.0.0/17\n" in stored["content"]["plainText"]
    assert "<code>48.220.0.0/17</code>" in stored["content"]["html"]
    (attachment,) = stored["attachments"]
    assert attachment["name"] == "servicetags-report-francecentral-347-360.json"
    assert json.loads(base64.b64decode(attachment["contentInBase64"])) == report()
    assert stored["headers"]["X-Servicetags-Report"] == "reports/francecentral/a.json"
    assert acs.requests[0] == ("POST", "/emails:send", 202)
    assert acs.requests[1] == ("GET", f"/emails/operations/{operation_id}", 200)
    (saved,) = acs.directory.glob("*.json")
    assert json.loads(saved.read_bytes()) == stored


def test_acs_throttled_once_is_retried_by_the_sdk_and_then_succeeds(acs, acs_sender):
    acs.fail_next(1, 429)
    acs_sender.send(email())
    assert [status for method, _, status in acs.requests if method == "POST"] == [429, 202]
    assert len(acs.messages) == 1


def test_acs_resending_the_same_email_reuses_the_operation_and_stores_it_once(acs, acs_sender):
    first = acs_sender.send(email())
    assert acs_sender.send(email()) == first
    assert len(acs.messages) == 1
    acs_sender.send(email("another key"))
    assert len(acs.messages) == 2


def test_acs_conflict_on_the_operation_id_means_an_earlier_try_was_accepted(acs, acs_sender):
    acs.fail_next(1, 409)
    assert acs_sender.send(email()) == acs_sender.operation_id_for(email())


def test_acs_bad_request_is_permanent(acs, acs_sender):
    acs.fail_next(1, 400)
    with pytest.raises(PermanentMailError, match="HTTP 400"):
        acs_sender.send(email())
    assert acs.messages == []


def test_acs_server_errors_that_outlast_the_sdk_retries_are_transient(acs, acs_sender):
    acs.fail_next(10, 503)
    with pytest.raises(TransientMailError, match="HTTP 503"):
        acs_sender.send(email())
    assert acs.messages == []


def test_acs_send_that_ends_failed_is_permanent(acs, acs_sender):
    acs.fail_operations_next(1)
    with pytest.raises(PermanentMailError, match="failed"):
        acs_sender.send(email())


def test_acs_wrong_key_is_refused_by_the_fake_and_permanent(acs):
    wrong = base64.b64encode(b"not the key").decode()
    sender = AcsSender(client_for(acs, key=wrong), timeout=20)
    try:
        with pytest.raises(PermanentMailError, match="HTTP 401"):
            sender.send(email())
    finally:
        sender.close()
    assert acs.requests == [("POST", "/emails:send", 401)]


def test_acs_unreachable_endpoint_is_transient():
    sender = acs_sender_from(
        f"http://127.0.0.1:{free_port()}",
        credential=AzureKeyCredential(base64.b64encode(b"k").decode()),
        retry_total=0,
    )
    try:
        with pytest.raises(TransientMailError, match="ServiceRequestError"):
            sender.send(email())
    finally:
        sender.close()


def test_acs_sender_from_an_endpoint_and_key_talks_to_the_fake(acs):
    sender = acs_sender_from(acs.url, credential=AzureKeyCredential(acs.access_key), polling_interval=0.05)
    try:
        sender.send(email())
    finally:
        sender.close()
    assert len(acs.messages) == 1
