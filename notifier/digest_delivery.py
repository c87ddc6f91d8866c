"""One digest per run for each recipient and channel, each sent once; per-report channel sends.

A run closes on the first of two events: the BlobCreated event of its `complete.json` (every
region checked), or its deadline message. Either one calls `deliver_run`:

1. freeze: `runs/<cloud>/<run>/_digest.json` in the notifications container, create-only,
   records which regions were checked (with their outcomes) and which were still missing.
   Whoever writes it first decides; a later event (the deadline after completion, a
   redelivery, a second notifier) renders from the same frozen record, so every recipient
   sees the same run.
2. per recipient and channel, in parallel (a failing or slow channel holds up nobody):
   filter the run's reports, build the digest, and send it once, guarded like e-mails
   are: a create-only claim, the send, then "sent" under the claim's ETag (`send_once`).

Impact: when the impact step is deployed (`impacts`, its results container, read only), each
digest carries the impact documents that exist when it is built, read by the report's own
blob name; a report whose impact is not there yet is said to be "not yet computed". The
digest never waits for the impact step, so a Resource Graph outage delays no report.

The crash window is the one of e-mails: a notifier killed between a channel accepting the
message and the "sent" mark sends it again, with the same `webhook-id` / Message-ID, so
the receiver can tell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from core import runs
from core.digest import DigestReport, build_digest, worth_sending
from core.errors import PermanentError, TransientError
from core.impact_render import section
from core.ports import BlobStore, MailSender
from notifier.channels import Channel, ChannelPoster
from notifier.chat_render import slack_payload, teams_payload
from notifier.digest_email import render_digest_email
from notifier.mail import PermanentMailError, TransientMailError
from notifier.recipients import Recipient, filter_report
from runtime.crash_points import crash_point
from runtime.logs import log_event
from runtime.report_schema import ReportSchemaError, validate_report

log = logging.getLogger(__name__)
MARKER_SCHEMA = "servicetags.notification/v1"
FREEZE_SCHEMA = "servicetags.run-digest/v1"
Clock = Callable[[], datetime]
Target = Recipient | Channel


def _now() -> datetime:
    return datetime.now(UTC)


def target_key(target: Target) -> str:
    """A marker-name segment per recipient or channel (hashed: addresses are personal data)."""
    raw = target.address.lower() if isinstance(target, Recipient) else target.key.lower()
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def delivery_id(marker: str) -> str:
    """The webhook-id of a delivery: stable across every attempt and redelivery."""
    return "msg_" + hashlib.sha256(marker.encode()).hexdigest()[:32]


def send_once(
    markers: BlobStore,
    name: str,
    send: Callable[[], str],
    *,
    what: str,
    clock: Clock,
    claim_timeout: timedelta,
) -> bool:
    """Claim `name`, send, mark it sent. True when sent now, False when it had been before."""
    iso = clock().isoformat(timespec="seconds")
    claim = {"schema": MARKER_SCHEMA, "state": "sending", "what": what, "claimed_at": iso}
    etag: str | None
    if markers.create(name, json.dumps(claim).encode()):
        blob = markers.read(name)
        if blob is None:
            raise TransientError(f"marker {name} vanished after being claimed")
        etag = blob.etag
    else:
        existing = markers.read(name)
        if existing is None:
            raise TransientError(f"marker {name} vanished while being claimed")
        state = json.loads(existing.data)
        if state["state"] == "sent":
            return False
        claimed = datetime.fromisoformat(state["claimed_at"])
        if state["state"] == "sending" and clock() - claimed < claim_timeout:
            raise TransientError(f"another notifier is sending {what}; checking again later")
        etag = markers.replace(name, json.dumps(claim).encode(), etag=existing.etag)
        if etag is None:
            raise TransientError(f"lost the race to take over {name}")
    try:
        provider_id = send()
    except Exception as exc:
        failed = {**claim, "state": "failed", "error": str(exc)[:500]}
        markers.replace(name, json.dumps(failed).encode(), etag=etag)
        raise
    crash_point("after_send")
    done = {
        **claim,
        "state": "sent",
        "sent_at": clock().isoformat(timespec="seconds"),
        "provider_id": provider_id,
    }
    if markers.replace(name, json.dumps(done).encode(), etag=etag) is None:
        log_event(
            log,
            "marker_changed",
            f"marker {name} changed while sending; {what} went out",
            level=logging.WARNING,
            marker=name,
        )
    return True


class RunDelivered(NamedTuple):
    run: str
    closed_by: str
    sent: tuple[str, ...]
    already: tuple[str, ...]
    skipped: tuple[str, ...]


class Digests:
    def __init__(
        self,
        *,
        runs_store: BlobStore,
        reports: BlobStore,
        markers: BlobStore,
        report_url: Callable[[str], str],
        sender: MailSender | None,
        mail_from: str,
        recipients: Sequence[Recipient],
        channels: Sequence[Channel],
        poster: ChannelPoster,
        claim_timeout: timedelta = timedelta(minutes=10),
        clock: Clock = _now,
        impacts: BlobStore | None = None,
    ) -> None:
        self.runs, self.reports, self.markers = runs_store, reports, markers
        self.impacts = impacts  # the impact step's results, or None where it is not deployed
        self.report_url, self.sender, self.mail_from = report_url, sender, mail_from
        self.recipients, self.channels, self.poster = list(recipients), list(channels), poster
        self.claim_timeout, self.clock = claim_timeout, clock
        # Reports this process validated at their own event, by blob name. Report blobs are
        # immutable and named by content, so the run's digest need not read and check them again.
        self._seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._seen_lock = threading.Lock()

    def remember(self, blob_name: str, report: dict[str, Any]) -> None:
        with self._seen_lock:
            self._seen[blob_name] = report
            while len(self._seen) > 512:
                self._seen.popitem(last=False)

    def _recalled(self, blob_name: str) -> dict[str, Any] | None:
        with self._seen_lock:
            return self._seen.get(blob_name)

    # ---- the run ------------------------------------------------------------------------------

    def _freeze(self, cloud: str, run_id: str, closed_by: str) -> dict[str, Any]:
        name = f"runs/{runs.run_prefix(cloud, run_id)}_digest.json"
        existing = self.markers.read(name)
        if existing is not None:
            return dict(json.loads(existing.data))
        if closed_by == "complete" and self.runs.read(runs.complete_name(cloud, run_id)) is None:
            # An event is trusted only to say which blob to look at: no marker, no completion.
            raise PermanentError(
                f"run {run_id} of {cloud} has no complete marker "
                f"({runs.complete_name(cloud, run_id)}); event refused as forged"
            )
        manifest = self.runs.read(runs.manifest_name(cloud, run_id))
        if manifest is None:
            raise PermanentError(
                f"run {run_id} of {cloud} has no manifest "
                f"({runs.manifest_name(cloud, run_id)}); nothing to digest"
            )
        run = json.loads(manifest.data)
        names = list(self.runs.names(runs.run_prefix(cloud, run_id) + "regions/"))
        outcomes: dict[str, dict[str, Any]] = {}
        for blob_name, blob in zip(names, _read_all(self.runs, names), strict=True):
            region = runs.region_of_outcome(blob_name)
            if blob is not None and region:
                outcomes[region] = json.loads(blob.data)
        missing = runs.missing_regions(run, outcomes)
        doc = {
            "schema": FREEZE_SCHEMA,
            "run": run,
            "outcomes": outcomes,
            "missing": missing,
            "closed_by": "complete" if not missing else closed_by,
            "frozen_at": self.clock().isoformat(timespec="milliseconds"),
        }
        if not self.markers.create(name, json.dumps(doc).encode()):
            winner = self.markers.read(name)
            if winner is None:
                raise TransientError(f"{name} vanished while being written")
            return dict(json.loads(winner.data))
        log_event(
            log,
            "run_closed",
            f"run {run['run_id']} closed by {doc['closed_by']}: "
            f"{len(outcomes)} regions checked, {len(missing)} missing",
            cloud=cloud,
            run_id=run["run_id"],
            closed_by=doc["closed_by"],
            checked=len(outcomes),
            missing=missing,
        )
        return doc

    def _reports(self, frozen: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        wanted = [
            (region, o["report"]) for region, o in sorted(frozen["outcomes"].items()) if o.get("report")
        ]
        known = {name: r for _, name in wanted if (r := self._recalled(name)) is not None}
        blobs = dict(
            zip(
                (n for _, n in wanted if n not in known),
                _read_all(self.reports, [n for _, n in wanted if n not in known]),
                strict=True,
            )
        )
        for region, blob_name in wanted:
            if blob_name in known:
                out.append((blob_name, known[blob_name]))
                continue
            blob = blobs[blob_name]
            if blob is None:
                raise PermanentError(f"report {blob_name!r} of region {region} is gone")
            try:
                out.append((blob_name, validate_report(json.loads(blob.data))))
            except (ValueError, ReportSchemaError) as exc:
                raise PermanentError(f"report {blob_name!r} is not a valid change report: {exc}") from None
        return out

    def deliver_run(self, cloud: str, run_id: str, *, closed_by: str) -> RunDelivered:
        frozen = self._freeze(cloud, run_id, closed_by)
        run = frozen["run"]
        reports = self._reports(frozen)
        targets: list[Target] = [r for r in self.recipients if r.delivery == "digest"]
        targets += [c for c in self.channels if c.delivery == "digest"]
        if not targets:
            return RunDelivered(run["run_id"], frozen["closed_by"], (), (), ())
        impacts = read_impacts(self.impacts, [name for name, _ in reports])
        prefix = f"runs/{runs.run_prefix(cloud, run_id)}"

        def one(target: Target) -> str:
            chosen = [
                DigestReport(name, self.report_url(name), f, impacts.get(name))
                for name, rep in reports
                if (f := filter_report(rep, target)) is not None
            ]
            outcomes = {r: o for r, o in frozen["outcomes"].items() if target.wants_region(r)}
            missing = [r for r in frozen["missing"] if target.wants_region(r)]
            digest = build_digest(
                run,
                outcomes,
                missing,
                chosen,
                closed_by=frozen["closed_by"],
                with_impact=self.impacts is not None,
            )
            if not worth_sending(digest):
                return "skipped"
            marker = f"{prefix}{target_key(target)}.json"
            sent = send_once(
                self.markers,
                marker,
                lambda: self._send(target, digest, chosen, marker),
                what=f"the digest of run {run['run_id']} to {_label(target)}",
                clock=self.clock,
                claim_timeout=self.claim_timeout,
            )
            if sent:
                log_event(
                    log,
                    "digest_sent",
                    f"digest of run {run['run_id']} sent to {_label(target)}",
                    run_id=run["run_id"],
                    target=_label(target),
                    regions=digest["regions_changed"],
                    missing=digest["missing"],
                    closed_by=digest["closed_by"],
                )
            return "sent" if sent else "already"

        results = _in_parallel(targets, one)
        return RunDelivered(
            run["run_id"],
            frozen["closed_by"],
            *(tuple(_label(t) for t, r in results if r == kind) for kind in ("sent", "already", "skipped")),
        )

    def _send(self, target: Target, digest: dict[str, Any], chosen: list[DigestReport], marker: str) -> str:
        if isinstance(target, Recipient):
            if self.sender is None:
                raise PermanentError("no mail sender configured")
            message = render_digest_email(
                digest, chosen, sender=self.mail_from, recipient=target, message_id=marker, date=self.clock()
            )
            try:
                return self.sender.send(message)
            except TransientMailError as exc:
                raise TransientError(f"digest to {target.address} not sent: {exc}") from None
            except PermanentMailError as exc:
                raise PermanentError(f"digest to {target.address} not sent: {exc}") from None
        return self.post(target, digest, marker, body=None)

    def post(self, channel: Channel, digest: dict[str, Any], marker: str, *, body: bytes | None) -> str:
        """POST a digest (or, for a signed webhook in report mode, `body`) to a channel."""
        if channel.kind == "teams":
            payload: Any = teams_payload(digest)
        elif channel.kind == "slack":
            payload = slack_payload(digest)
        else:
            payload = digest
        data = (
            body
            if body is not None
            else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        )
        msg_id = delivery_id(marker)
        status = self.poster.send(channel, data, msg_id)
        return f"{msg_id} HTTP {status}"

    # ---- per-report mode for channels -------------------------------------------------------

    def deliver_report(self, blob_name: str, report: dict[str, Any]) -> list[str]:
        """Send a report to each channel in report mode; the names of those sent to now."""
        self.remember(blob_name, report)
        chosen = [c for c in self.channels if c.delivery == "report"]
        if not chosen:
            return []
        impact = read_impacts(self.impacts, [blob_name]).get(blob_name)

        def one(channel: Channel) -> str:
            filtered = filter_report(report, channel)
            if filtered is None:
                return "skipped"
            item = DigestReport(blob_name, self.report_url(blob_name), filtered, impact)
            run = {"cloud": report["cloud"], "run_id": f"report {report['region']}", "started_at": ""}
            digest = build_digest(
                run,
                {report["region"]: {"status": "changed"}},
                [],
                [item],
                closed_by="report",
                with_impact=self.impacts is not None,
            )
            marker = f"{blob_name}/{target_key(channel)}.json"
            body = (
                json.dumps(filtered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                if channel.kind == "webhook"
                else None
            )
            sent = send_once(
                self.markers,
                marker,
                lambda: self.post(channel, digest, marker, body=body),
                what=f"report {blob_name} to channel {channel.name}",
                clock=self.clock,
                claim_timeout=self.claim_timeout,
            )
            return "sent" if sent else "already"

        return [_label(c) for c, r in _in_parallel(chosen, one) if r == "sent"]


def read_impacts(store: BlobStore | None, report_names: list[str]) -> dict[str, dict[str, Any]]:
    """The impact documents that exist now, by report blob name (impact/<report blob name>).
    One that cannot be read as an impact document counts as not computed: the impact step's
    output is advisory and never stops a report or a digest."""
    if store is None or not report_names:
        return {}
    out = {}
    for name, blob in zip(report_names, _read_all(store, report_names), strict=True):
        if blob is None:
            continue
        try:
            doc = json.loads(blob.data)
            section(doc)  # what every rendering reads; our own blob, but checked like any input
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("impact of %s unreadable (%s): said to be not yet computed", name, exc)
            continue
        out[name] = doc
    return out


def _read_all(store: BlobStore, names: list[str]) -> list[Any]:
    """Many small blobs at once: a run has one outcome (and maybe one report) per region."""
    if len(names) < 2:
        return [store.read(n) for n in names]
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="read") as pool:
        return list(pool.map(store.read, names))


def _label(target: Target) -> str:
    return target.address if isinstance(target, Recipient) else f"{target.kind} channel {target.name}"


def _in_parallel(targets: Sequence[Target], work: Callable[[Any], str]) -> list[tuple[Target, str]]:
    """Run `work` for every target at once; every target is tried before any error is raised.
    While any failure may pass, the event is retried (targets already sent are skipped then);
    when only permanent ones are left, it is poisoned with every reason."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets)), thread_name_prefix="deliver") as pool:
        futures = [(t, pool.submit(work, t)) for t in targets]
        results, permanent, transient = [], [], []
        for target, future in futures:
            try:
                results.append((target, future.result()))
            except PermanentError as exc:
                permanent.append(str(exc))
            except Exception as exc:
                transient.append(f"{_label(target)}: {exc}")
    if transient:
        raise TransientError("; ".join(transient + permanent))
    if permanent:
        raise PermanentError("; ".join(permanent))
    return results
