"""Turning one report event into one log record and e-mails, each sent once.

Events arrive at least once, possibly twice at the same moment on two notifiers, and out of
order. Every send is guarded by a marker blob per (report, recipient) in the notifications
container:

1. claim: create-only `<report>/<recipient>.json` with state "sending" (one notifier wins);
2. send the e-mail;
3. mark: replace the claim with state "sent" under its ETag.

A fresh claim held by someone else means "retry later" (the event comes back and then finds
"sent"); a claim older than `claim_timeout` was abandoned by a crashed notifier and is taken
over; a failed send releases its claim at once.

The one crash window left is between 2 and 3: the mail went out but is not marked, so it is
sent again. That side is chosen on purpose: a duplicate (with the same Message-ID, which
mail clients recognise) rather than a lost notice. The change_report log record is guarded the
same way (`<report>/_logged.json`, written after the record), so alerts count each report once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from common.errors import PermanentError, TransientError
from common.faults import crash_point
from common.history_store import is_imported
from common.logs import log_event
from common.ports import BlobStore
from common.render import summary_line
from common.report_schema import ReportSchemaError, validate_report
from notifier.email_render import render_email
from notifier.mail import MailSender, PermanentMailError, TransientMailError
from notifier.recipients import Recipient, filter_report

log = logging.getLogger(__name__)
MARKER_SCHEMA = "servicetags.notification/v1"


class Delivered(NamedTuple):
    report: str
    sent: tuple[str, ...]           # addresses e-mailed now
    already: tuple[str, ...]        # addresses e-mailed before (a duplicate event)
    skipped: tuple[str, ...]        # addresses whose filters matched nothing
    logged: bool                    # whether this call wrote the change_report record


def marker_name(report_blob: str, address: str) -> str:
    # Hashed: addresses are personal data and not always valid in blob names.
    return f"{report_blob}/{hashlib.sha256(address.lower().encode()).hexdigest()[:24]}.json"


def _now() -> datetime:
    return datetime.now(UTC)


class Notifier:
    def __init__(self, *, reports: BlobStore, markers: BlobStore, sender: MailSender, mail_from: str,
                 recipients: Sequence[Recipient], claim_timeout: timedelta = timedelta(minutes=10),
                 clock: Callable[[], datetime] = _now, digests: Any = None) -> None:
        self.reports, self.markers, self.sender = reports, markers, sender
        self.digests = digests  # notifier.digest_delivery.Digests: channels in per-report mode
        self.mail_from, self.recipients = mail_from, list(recipients)
        self.claim_timeout, self.clock = claim_timeout, clock

    def deliver(self, blob_name: str, blob_url: str) -> Delivered:
        blob = self.reports.read(blob_name)
        if blob is None:
            raise PermanentError(f"report blob {blob_name!r} is gone (deleted after its event was sent)")
        try:
            report = validate_report(json.loads(blob.data))
        except (ValueError, ReportSchemaError) as exc:
            raise PermanentError(f"report blob {blob_name!r} is not a valid change report: {exc}") from None

        if is_imported(self.markers, blob_name):
            # Backfilled by `servicetags import` (without --notify): history, not news.
            log_event(log, "report_imported", f"{blob_name}: imported, not announced", report=blob_name)
            return Delivered(blob_name, (), (), (), False)
        logged = self._log_once(blob_name, blob_url, report)
        sent, already, skipped, refused = [], [], [], []
        for recipient in self.recipients:
            if recipient.delivery != "report":
                skipped.append(recipient.address)  # theirs comes in the run's digest
                continue
            filtered = filter_report(report, recipient) if recipient.wants_region(report["region"]) else None
            if filtered is None:
                skipped.append(recipient.address)
                continue
            try:
                if self._send_once(blob_name, blob_url, filtered, recipient):
                    sent.append(recipient.address)
                else:
                    already.append(recipient.address)
            except PermanentError as exc:
                refused.append(str(exc))  # the others still get theirs; the event is poisoned after
        if self.digests is not None:
            try:
                sent += self.digests.deliver_report(blob_name, report)
            except PermanentError as exc:
                refused.append(str(exc))
        if refused:
            raise PermanentError("; ".join(refused))
        return Delivered(blob_name, tuple(sent), tuple(already), tuple(skipped), logged)

    def _log_once(self, blob_name: str, blob_url: str, report: dict[str, Any]) -> bool:
        name = f"{blob_name}/_logged.json"
        if self.markers.read(name) is not None:
            return False
        # The record first, the marker second: a crash between them repeats the record, never loses it.
        log_event(log, "change_report", summary_line(report), cloud=report["cloud"], region=report["region"],
                  from_change=report["from"]["changeNumber"], to_change=report["to"]["changeNumber"],
                  summary=report["summary"], report=blob_name, blob_url=blob_url,
                  tags=[t["id"] for t in report["tags"]])
        self.markers.create(name, json.dumps({"schema": MARKER_SCHEMA, "logged_at": self._iso()}).encode())
        return True

    def _iso(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    def _send_once(self, blob_name: str, blob_url: str, report: dict[str, Any], recipient: Recipient) -> bool:
        """True when this call sent the e-mail, False when it had been sent before."""
        name = marker_name(blob_name, recipient.address)
        claim = {"schema": MARKER_SCHEMA, "state": "sending", "report": blob_name,
                 "claimed_at": self._iso()}
        etag: str | None
        if self.markers.create(name, json.dumps(claim).encode()):
            etag = self.markers.read(name).etag  # type: ignore[union-attr]
        else:
            existing = self.markers.read(name)
            if existing is None:
                raise TransientError(f"marker {name} vanished while being claimed")
            state = json.loads(existing.data)
            if state["state"] == "sent":
                return False
            claimed = datetime.fromisoformat(state["claimed_at"])
            if state["state"] == "sending" and self.clock() - claimed < self.claim_timeout:
                raise TransientError(f"another notifier is sending {blob_name} to a recipient; "
                                     "checking again later")
            # Abandoned by a crashed notifier: take it over.
            etag = self.markers.replace(name, json.dumps(claim).encode(), etag=existing.etag)
            if etag is None:
                raise TransientError(f"lost the race to take over {name}")

        message = render_email(report, sender=self.mail_from, recipient=recipient,
                               message_id=f"{blob_name}|{recipient.address.lower()}",
                               blob_name=blob_name, blob_url=blob_url, date=self.clock())
        try:
            provider_id = self.sender.send(message)
        except (TransientMailError, PermanentMailError) as exc:
            # Release the claim, so the retry (or an operator's requeue) need not wait it out.
            failed = {**claim, "state": "failed", "error": str(exc)}
            self.markers.replace(name, json.dumps(failed).encode(), etag=etag)
            kind = TransientError if isinstance(exc, TransientMailError) else PermanentError
            raise kind(f"mail to {recipient.address} not sent: {exc}") from None
        crash_point("after_send")
        done = {**claim, "state": "sent", "sent_at": self._iso(), "provider_id": provider_id}
        if self.markers.replace(name, json.dumps(done).encode(), etag=etag) is None:
            log.warning("marker %s changed while sending; the e-mail went out", name)
        log_event(log, "email_sent", f"report e-mailed to {recipient.address}", report=blob_name,
                  region=report["region"], recipient=recipient.address, provider_id=provider_id)
        return True
