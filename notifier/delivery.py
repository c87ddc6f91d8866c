"""Turning one report event into one log record and e-mails, each sent once.

Events arrive at least once, possibly twice at the same moment on two notifiers, and out of
order. Every send is guarded by a marker blob per (report, recipient) in the notifications
container:

1. claim: create-only `<report>/<recipient>.json` with state "sending" (one notifier wins);
2. send the e-mail;
3. mark: replace the claim with state "sent" under its ETag.

A claim older than `claim_timeout` was abandoned by a crashed notifier and is taken over; a
failed send releases its claim at once. A fresh claim held by someone else is waited for,
polling the marker, until it turns "sent" (nothing to do) or expires (taken over), for at most
`claim_wait` (by default the claim's whole lifetime): so a notifier killed between its claim
and its send costs the event no delivery attempt, and no retry window, however short, can run
out before the claim does (issue 16). The webhook waits less than Event Grid's 30 s response
timeout and answers 503 (`ClaimHeld`): Event Grid retries for 24 hours, far past any claim.

The report's location in the log record and the e-mail is derived from the configured reports
container and the blob name, never taken from the event: an event whose `data.url` is not that
blob is refused (PermanentError), so a forged event can neither plant a link nor, by marking the
report delivered, suppress the genuine event.

The one crash window left is between 2 and 3: the mail went out but is not marked, so it is
sent again. That side is chosen on purpose: a duplicate (with the same Message-ID, which
mail clients recognise) rather than a lost notice. The change_report log record is guarded the
same way (`<report>/_logged.json`, written after the record), so alerts count each report once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from core.digest import DigestReport, impact_member
from core.errors import PermanentError, TransientError
from core.ports import BlobStore, MailSender
from core.render import summary_line
from notifier.digest_delivery import read_impacts
from notifier.email_render import render_email
from notifier.mail import PermanentMailError, TransientMailError
from notifier.recipients import Recipient, filter_report
from runtime.crash_points import crash_point
from runtime.history_store import is_imported
from runtime.logs import log_event
from runtime.report_schema import ReportSchemaError, validate_report

log = logging.getLogger(__name__)
MARKER_SCHEMA = "servicetags.notification/v1"
_UNREAD = object()


class Delivered(NamedTuple):
    report: str
    sent: tuple[str, ...]  # addresses e-mailed now
    already: tuple[str, ...]  # addresses e-mailed before (a duplicate event)
    skipped: tuple[str, ...]  # addresses whose filters matched nothing
    logged: bool  # whether this call wrote the change_report record


def marker_name(report_blob: str, address: str) -> str:
    # Hashed: addresses are personal data and not always valid in blob names.
    return f"{report_blob}/{hashlib.sha256(address.lower().encode()).hexdigest()[:24]}.json"


def _now() -> datetime:
    return datetime.now(UTC)


class ClaimHeld(TransientError):
    """Another notifier holds a fresh claim on a send; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def same_blob_url(event_url: str, expected_url: str) -> bool:
    """Whether an event's URL names the expected blob: same scheme, host and port, and path
    (compared decoded, as producers differ in what they percent-encode), no query."""
    a, b = urlsplit(event_url), urlsplit(expected_url)
    return (
        a.scheme.lower() == b.scheme.lower()
        and a.netloc.lower() == b.netloc.lower()
        and unquote(a.path) == unquote(b.path)
        and not a.query
        and not a.fragment
    )


CLAIM_POLL_SECONDS = 2.0


class Notifier:
    def __init__(
        self,
        *,
        reports: BlobStore,
        markers: BlobStore,
        sender: MailSender,
        mail_from: str,
        recipients: Sequence[Recipient],
        claim_timeout: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = _now,
        digests: Any = None,
        reports_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        impacts: BlobStore | None = None,
    ) -> None:
        self.reports, self.markers, self.sender = reports, markers, sender
        self.impacts = impacts  # the impact step's results (read only), None where it is not deployed
        self.digests = digests  # notifier.digest_delivery.Digests: channels in per-report mode
        self.mail_from, self.recipients = mail_from, list(recipients)
        self.claim_timeout, self.clock, self.sleep = claim_timeout, clock, sleep
        # The reports container's URL (the configured account's): links are built from it.
        self.reports_url = (
            reports_url if reports_url is not None else str(getattr(reports, "url", ""))
        ).rstrip("/")

    def report_url(self, blob_name: str) -> str:
        """Where the report is, from configuration alone (the event is not trusted for it)."""
        return f"{self.reports_url}/{quote(blob_name, safe='/~')}" if self.reports_url else blob_name

    def deliver(
        self, blob_name: str, event_url: str | None = None, *, claim_wait: timedelta | None = None
    ) -> Delivered:
        """Log and e-mail one report. `event_url`, the event's own `data.url`, is only checked:
        an event naming another account, container or blob is refused as forged."""
        blob_url = self.report_url(blob_name)
        report = self._checked_report(blob_name, blob_url, event_url)
        wait = self.claim_timeout if claim_wait is None else claim_wait
        if is_imported(self.markers, blob_name):
            # Backfilled by `servicetags import` (without --notify): history, not news.
            log_event(log, "report_imported", f"{blob_name}: imported, not announced", report=blob_name)
            return Delivered(blob_name, (), (), (), False)
        logged = self._log_once(blob_name, blob_url, report)
        sent, already, skipped, refused = [], [], [], []
        impact: Any = _UNREAD
        for recipient in self.recipients:
            if recipient.delivery != "report":
                skipped.append(recipient.address)  # theirs comes in the run's digest
                continue
            filtered = filter_report(report, recipient) if recipient.wants_region(report["region"]) else None
            if filtered is None:
                skipped.append(recipient.address)
                continue
            if impact is _UNREAD:  # read once, and only when someone gets a per-report e-mail
                impact = read_impacts(self.impacts, [blob_name]).get(blob_name)
            try:
                if self._send_once(blob_name, blob_url, filtered, recipient, wait, impact=impact):
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

    def _checked_report(self, blob_name: str, blob_url: str, event_url: str | None) -> dict[str, Any]:
        """The report the event names, read from the configured container and validated."""
        if event_url is not None and self.reports_url and not same_blob_url(event_url, blob_url):
            shown = event_url if len(event_url) <= 200 else event_url[:197] + "..."
            raise PermanentError(
                f"event data.url {shown!r} is not report blob {blob_name!r} of the "
                f"configured reports container {self.reports_url}; refused as forged"
            )
        blob = self.reports.read(blob_name)
        if blob is None:
            raise PermanentError(f"report blob {blob_name!r} is gone (deleted after its event was sent)")
        try:
            return validate_report(json.loads(blob.data))
        except (ValueError, ReportSchemaError) as exc:
            raise PermanentError(f"report blob {blob_name!r} is not a valid change report: {exc}") from None

    def _log_once(self, blob_name: str, blob_url: str, report: dict[str, Any]) -> bool:
        name = f"{blob_name}/_logged.json"
        if self.markers.read(name) is not None:
            return False
        # The record first, the marker second: a crash between them repeats the record, never loses it.
        log_event(
            log,
            "change_report",
            summary_line(report),
            cloud=report["cloud"],
            region=report["region"],
            from_change=report["from"]["changeNumber"],
            to_change=report["to"]["changeNumber"],
            summary=report["summary"],
            report=blob_name,
            blob_url=blob_url,
            tags=[t["id"] for t in report["tags"]],
        )
        self.markers.create(name, json.dumps({"schema": MARKER_SCHEMA, "logged_at": self._iso()}).encode())
        return True

    def _iso(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    def _claim(self, name: str, blob_name: str, claim_wait: timedelta) -> tuple[str, dict[str, Any]] | None:
        """The ETag and content of our claim on marker `name`, or None when the e-mail was sent
        before. Waits (up to `claim_wait`) for a fresh claim someone else holds: see the module doc."""
        waited = 0.0
        while True:
            claim = {
                "schema": MARKER_SCHEMA,
                "state": "sending",
                "report": blob_name,
                "claimed_at": self._iso(),
            }
            if self.markers.create(name, json.dumps(claim).encode()):
                created = self.markers.read(name)
                if created is None:
                    raise TransientError(f"marker {name} vanished after being claimed")
                return created.etag, claim
            existing = self.markers.read(name)
            if existing is None:
                raise TransientError(f"marker {name} vanished while being claimed")
            state = _marker_state(existing.data)
            if state.get("state") == "sent":
                return None
            claimed = _claimed_at(state)
            if state.get("state") == "sending" and claimed is not None:
                held = (claimed + self.claim_timeout - self.clock()).total_seconds()
                if held > 0:
                    if waited + min(held, CLAIM_POLL_SECONDS) > claim_wait.total_seconds():
                        raise ClaimHeld(
                            f"another notifier is sending {blob_name} to a recipient; checking again later",
                            retry_after=held,
                        )
                    pause = min(held, CLAIM_POLL_SECONDS)
                    self.sleep(pause)
                    waited += pause
                    continue
            # Abandoned by a crashed notifier, released after a failed send, or unreadable: take it over.
            etag = self.markers.replace(name, json.dumps(claim).encode(), etag=existing.etag)
            if etag is None:
                raise TransientError(f"lost the race to take over {name}")
            return etag, claim

    def _send_once(
        self,
        blob_name: str,
        blob_url: str,
        report: dict[str, Any],
        recipient: Recipient,
        claim_wait: timedelta,
        *,
        impact: dict[str, Any] | None = None,
    ) -> bool:
        """True when this call sent the e-mail, False when it had been sent before."""
        name = marker_name(blob_name, recipient.address)
        claimed = self._claim(name, blob_name, claim_wait)
        if claimed is None:
            return False
        etag, claim = claimed
        crash_point("before_send")

        message = render_email(
            report,
            sender=self.mail_from,
            recipient=recipient,
            message_id=f"{blob_name}|{recipient.address.lower()}",
            blob_name=blob_name,
            blob_url=blob_url,
            date=self.clock(),
            impact=None
            if self.impacts is None
            else impact_member([DigestReport(blob_name, blob_url, report, impact)]),
        )
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
            log_event(
                log,
                "marker_changed",
                f"marker {name} changed while sending; the e-mail went out",
                level=logging.WARNING,
                marker=name,
            )
        log_event(
            log,
            "email_sent",
            f"report e-mailed to {recipient.address}",
            report=blob_name,
            region=report["region"],
            recipient=recipient.address,
            provider_id=provider_id,
        )
        return True


def _marker_state(data: bytes) -> dict[str, Any]:
    try:
        state = json.loads(data)
    except ValueError:  # not ours, or torn: taken over like an abandoned claim
        return {}
    return state if isinstance(state, dict) else {}


def _claimed_at(state: dict[str, Any]) -> datetime | None:
    try:
        claimed = datetime.fromisoformat(str(state.get("claimed_at")))
    except ValueError:
        return None
    return claimed if claimed.tzinfo is not None else claimed.replace(tzinfo=UTC)
