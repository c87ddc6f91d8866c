"""`servicetags demo`: the whole pipeline, locally, on real Microsoft data.

It starts the local stack, serves OLD from the local ARM endpoint, runs the producer and N
worker processes until the regions queue drains (the baseline), switches the endpoint to NEW,
runs them again, lets the stack's impact step match every report against the bundled rules
(`data/rules/`), lets the relay and a notifier process turn every report into e-mail and
channel messages (with the impact section), and prints what changed. Everything it started
is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ServiceTagsError
from runtime.arguments import ArgumentParser, fail

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "snapshots"
DEFAULT_OLD = BUNDLED / "ServiceTags_Public_2025-01-12_cn340.json.gz"
DEFAULT_NEW = BUNDLED / "ServiceTags_Public_2025-01-14_cn341.json.gz"


class Progress:
    """One status line, rewritten in place on a terminal, printed at most every few seconds
    elsewhere (CI logs)."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream, self.tty = stream, stream.isatty()
        self._last = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{text}" + ("\n" if final else ""))
            self.stream.flush()
        elif final or time.monotonic() - self._last > 3:
            self.stream.write(text + "\n")
            self._last = time.monotonic()


def _wait(until: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise ServiceTagsError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class Demo:
    def __init__(self, *, env: dict[str, str], workers: int, regions: str, progress: Progress) -> None:
        from runtime.adapters.storage import StorageClients, StorageSettings
        from runtime.config import Env

        self.env, self.workers, self.regions, self.progress = env, workers, regions, progress
        self.clients = StorageClients(StorageSettings.from_env(Env(env)))
        self.queue = self.clients.queue("regions")
        self.events = self.clients.queue("change-events")
        self.reports = self.clients.container("reports")
        self.snapshots = self.clients.container("snapshots")
        self.impacts = self.clients.container("impact")
        self.matched: dict[str, dict[str, Any]] = {}  # impact documents, by report blob name
        self.regions_poison = self.clients.queue("regions-poison")
        self.children: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.env,
            "SERVICETAGS_LOG_LEVEL": "WARNING",
            "SERVICETAGS_IDLE_SLEEP": "0",
            "SERVICETAGS_RETRY_DELAY": "1",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.children.append(process)
        return process

    def _finish(self, processes: list[subprocess.Popen[bytes]], what: str) -> None:
        for process in processes:
            _, err = process.communicate()
            if process.returncode != 0:
                raise ServiceTagsError(
                    f"{what} exited with {process.returncode}: {err.decode(errors='replace').strip()[-500:]}"
                )

    def cycle(self, label: str, run_id: str | None = None) -> int:
        """Produce, then drain the regions queue with N worker processes."""
        from producer.main import ProducerSettings, produce
        from runtime.config import Env

        settings = ProducerSettings.from_env(Env({**self.env, "SERVICETAGS_REGIONS": self.regions}))
        produce(settings, run_id=run_id or f"demo-{int(time.time())}")
        workers = [self._spawn("worker", "--until-empty") for _ in range(self.workers)]
        while any(w.poll() is None for w in workers):
            self.progress.show(f"{label}: {self.workers} workers, {self.queue.depth()} region messages left")
            time.sleep(0.3)
        self._finish(workers, "a worker")
        self.progress.show(f"{label}: done", final=True)
        return sum(1 for _ in self._checked())

    def _checked(self) -> list[str]:
        return [n for n in self.clients.container("snapshots").names("Public/") if n.endswith("/latest.json")]

    def deliveries(self, outbox: Path, expected: dict[str, int], *, timeout: float = 120) -> None:
        """With a notifier already running: wait for the `expected` number of messages of
        each kind (e-mail, each channel) in the outbox."""

        def counts() -> dict[str, int]:
            return {kind: len(list(outbox.glob(pattern))) for kind, pattern in DELIVERY_FILES.items()}

        def done() -> bool:
            got = counts()
            self.progress.show("notifier: " + ", ".join(f"{n} {kind}" for kind, n in got.items()))
            return all(n >= expected[kind] for kind, n in got.items())

        _wait(done, timeout, ", ".join(f"{n} {kind}" for kind, n in expected.items()))
        final = ", ".join(f"{n} {kind}" for kind, n in counts().items())
        self.progress.show(f"notifier: {final}", final=True)

    def wait_for_impact(
        self, fresh: dict[str, Any], timings: dict[str, float], *, timeout: float = 120
    ) -> None:
        """Wait for the stack's impact step to have written the impact of every fresh report
        (impact/<report blob name>); keep the documents in `self.matched`, by report name."""
        started = time.monotonic()

        def done() -> bool:
            have = set(self.impacts.names())
            self.progress.show(f"impact: {len(have & set(fresh))} of {len(fresh)} reports matched")
            return set(fresh) <= have

        _wait(done, timeout, f"the impact of {len(fresh)} reports (see the stack's logs/impact.log)")
        self.progress.show(f"impact: {len(fresh)} reports matched against the bundled rules", final=True)
        for name in fresh:
            blob = self.impacts.read(name)
            assert blob is not None
            self.matched[name] = json.loads(blob.data)
        timings["impact"] = timings.get("impact", 0.0) + time.monotonic() - started

    def notify(self, outbox: Path, expected: dict[str, int], timings: dict[str, float]) -> None:
        """A notifier process, until `expected` messages per kind are in the outbox; the
        run's events have waited for it in the queue."""
        started = time.monotonic()
        notifier = self._spawn("notifier")
        self.deliveries(outbox, expected)
        notifier.terminate()
        self._finish([notifier], "the notifier")
        timings["notify"] += time.monotonic() - started

    def stale_regions(self, run_id: str) -> list[str]:
        """Regions whose check in this run was stale (an older reply than recorded)."""
        out = []
        for name in self._checked():
            blob = self.snapshots.read(name)
            state = json.loads(blob.data) if blob else {}
            if state.get("run_id") == run_id and state.get("last_outcome") == "stale":
                out.append(state["region"])
        return sorted(out)

    def regressions(self) -> dict[str, dict[str, Any]]:
        """The `source_regressed` records: one marker per distinct older reply."""
        out = {}
        for name in self.snapshots.names("Public/regressions/"):
            blob = self.snapshots.read(name)
            if blob is not None:
                out[name] = json.loads(blob.data)
        return out

    def new_reports(self, *, known: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Report blobs written since `known` was taken, by name."""
        fresh = {}
        for name in self.reports.names():
            if name not in known:
                blob = self.reports.read(name)
                assert blob is not None
                fresh[name] = json.loads(blob.data)
        return fresh

    def step_record(
        self,
        path: Path,
        run_id: str,
        fresh: dict[str, dict[str, Any]],
        *,
        outbox: Path,
        emails_before: set[Path],
        poisoned_before: int,
        regressed_before: set[str],
    ) -> dict[str, Any]:
        """One replay step of `--summary-json`: what this file's cycle reported, sent and refused."""
        return {
            "file": str(path),
            "reports": [
                {"region": r["region"], "region_event": r.get("region_event"), "report": name}
                for name, r in sorted(fresh.items())
            ],
            "emails": sorted(str(p) for p in set(outbox.glob("*.eml")) - emails_before),
            "poisoned": [
                {"region": _message_region(p["content"]), "reason": p["reason"]}
                for p in self.poisoned_records()[poisoned_before:]
            ],
            "stale": self.stale_regions(run_id),
            "source_regressed": [
                {"change_number": r["change_number"], "recorded": r["recorded"]}
                for n, r in sorted(self.regressions().items())
                if n not in regressed_before
            ],
        }

    def poisoned_records(self) -> list[dict[str, Any]]:
        from runtime.poison_queues import poisoned

        return [poisoned(m) for m in self.regions_poison.peek(32)]

    def stop_children(self) -> None:
        for process in self.children:
            if process.poll() is None:
                process.kill()
                process.wait()


DELIVERY_FILES = {
    "e-mail": "*.eml",
    "teams": "*.teams.json",
    "slack": "*.slack.json",
    "webhook": "*.webhook.json",
}


# Chat channels take one digest per run even when e-mail is per report: a team channel is
# read by people, and Slack takes one message a second (a real week is 60 reports, a minute).
CHAT_KINDS = ("teams", "slack")


def _expected_after(delivered: dict[str, int], delivery: str, reports: int) -> dict[str, int]:
    """Messages expected per kind once a run with `reports` new reports is delivered."""
    return {
        kind: n + (1 if delivery == "digest" or kind in CHAT_KINDS else reports)
        for kind, n in delivered.items()
    }


def demo_channels(env: dict[str, str], delivery: str) -> dict[str, str]:
    """One catch-all recipient and one channel of each kind against the local receiver."""
    base = env["SERVICETAGS_LOCAL_WEBHOOKS_URL"]
    recipients = [{**r, "delivery": delivery} for r in json.loads(env["SERVICETAGS_RECIPIENTS"])]
    channels = [
        {"name": "demo-teams", "type": "teams", "url_secret": "demo-teams-url", "delivery": "digest"},
        {"name": "demo-slack", "type": "slack", "url_secret": "demo-slack-url", "delivery": "digest"},
        {
            "name": "demo-webhook",
            "type": "webhook",
            "url_secret": "demo-webhook-url",
            "signing_secrets": ["demo-webhook-signing"],
            "delivery": delivery,
        },
    ]
    return {
        "SERVICETAGS_RECIPIENTS": json.dumps(recipients),
        "SERVICETAGS_CHANNELS": json.dumps(channels),
        "SERVICETAGS_SECRET_DEMO_TEAMS_URL": f"{base}/teams/demo-teams",
        "SERVICETAGS_SECRET_DEMO_SLACK_URL": f"{base}/slack/demo-slack",
        "SERVICETAGS_SECRET_DEMO_WEBHOOK_URL": f"{base}/webhook/demo-webhook",
        "SERVICETAGS_SECRET_DEMO_WEBHOOK_SIGNING": env["SERVICETAGS_LOCAL_SIGNING_SECRET"],
        "SERVICETAGS_DIGEST_DEADLINE": "900",
    }


def _channel_messages(outbox: Path) -> list[dict[str, str]]:
    return [
        {"channel": kind, "file": str(path)}
        for kind, pattern in DELIVERY_FILES.items()
        if kind != "e-mail"
        for path in sorted(outbox.glob(pattern))
    ]


def _emails(outbox: Path) -> list[dict[str, str]]:
    out = []
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        region = message["X-Servicetags-Region"] or message["X-Servicetags-Regions"]
        out.append(
            {
                "recipient": message["To"].addresses[0].addr_spec,
                "region": str(region).strip(),
                "report": str(message["X-Servicetags-Report"] or "").strip(),
                "subject": str(message["Subject"]),
                "file": str(path),
            }
        )
    return out


def _message_region(content: str) -> str | None:
    from runtime.poison_queues import message_region

    return message_region(content)


def _switch(state_dir: Path, snapshot: Path) -> None:
    """Publish `snapshot` on both local sources: the ARM endpoint and the Download Center."""
    from devstack.arm_admin import ArmAdminClient
    from devstack.download_center import DownloadCenterControl

    ArmAdminClient.from_state_dir(state_dir / "arm").set_snapshot(snapshot)
    DownloadCenterControl.from_state_dir(state_dir / "download").set_file(snapshot)


def _clear_outbox(outbox: Path) -> None:
    for pattern in DELIVERY_FILES.values():
        for stale in outbox.glob(pattern):
            stale.unlink()


def _publish_web(env: dict[str, str]) -> str:
    """The history index and $web, as the publisher job does; the local URL of the index page."""
    from runtime.config import Env
    from web.publish import sync_and_publish

    sync_and_publish(Env(env))
    return env["SERVICETAGS_LOCAL_WEB_URL"] + "Public/index.html"


def _report_entries(
    reports: dict[str, dict[str, Any]], impacts: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    from core.impact_render import summary_line as impact_line
    from core.render import summary_line

    return [
        {
            "region": r["region"],
            "blob": name,
            "summary": summary_line(r),
            "counts": r["summary"],
            "region_event": r.get("region_event"),
            "impact": impact_line(impacts[name]) if name in impacts else None,
            "rules_affected": impacts[name]["summary"]["rules_affected"] if name in impacts else None,
        }
        for name, r in sorted(reports.items())
    ]


def run_demo(
    *,
    old: Path | None = None,
    new: Path | None = None,
    snapshots: list[Path] | None = None,
    regions: str,
    workers: int,
    outbox: Path,
    progress: Progress,
    source: str = "arm",
    delivery: str = "digest",
) -> dict[str, Any]:
    """Replay `snapshots` in order (or OLD then NEW): the first is the baseline, each later one
    a full cycle (produce, workers, events, notifier). One step per later file in `steps`."""
    from devstack import stack

    files = list(snapshots) if snapshots else [p for p in (old, new) if p is not None]
    assert len(files) >= 2
    started = time.monotonic()
    outbox.mkdir(parents=True, exist_ok=True)
    _clear_outbox(outbox)
    steps: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    timings = {"stack": 0.0, "baseline": 0.0, "change": 0.0, "impact": 0.0, "notify": 0.0}
    checked = 0
    with tempfile.TemporaryDirectory(prefix="servicetags-demo-") as tmp:
        state_dir = Path(tmp)
        progress.show(
            "starting the local stack (Azurite, ARM endpoint, Download Center, relay, SMTP sink)", final=True
        )
        env = stack.up(state_dir, snapshot=files[0], persistent=False, outbox=outbox)
        env.update(demo_channels(env, delivery))
        env = {**env, "SERVICETAGS_SOURCE": source}
        demo = Demo(env=env, workers=workers, regions=regions, progress=progress)
        try:
            timings["stack"] = time.monotonic() - started
            mark = time.monotonic()
            demo.cycle(f"baseline ({files[0].name})", run_id=f"demo-0-{int(time.time())}")
            timings["baseline"] = time.monotonic() - mark
            delivered = dict.fromkeys(DELIVERY_FILES, 0)  # messages expected per kind so far
            for number, path in enumerate(files[1:], start=1):
                _switch(state_dir, path)
                poisoned_before = len(demo.poisoned_records())
                regressed_before = set(demo.regressions())
                emails_before = set(outbox.glob("*.eml"))
                run_id = f"demo-{number}-{int(time.time())}"
                mark = time.monotonic()
                checked = demo.cycle(f"step {number} ({path.name})", run_id=run_id)
                timings["change"] += time.monotonic() - mark
                fresh = demo.new_reports(known=reports)
                reports.update(fresh)
                # The impact step runs beside the notifier and a digest never waits for it; the
                # demo lets it finish first, so its messages show the impact of every report.
                if fresh:  # else nothing to send: the step's events wait for the next notifier
                    demo.wait_for_impact(fresh, timings)
                    delivered = _expected_after(delivered, delivery, len(fresh))
                    demo.notify(outbox, delivered, timings)
                steps.append(
                    demo.step_record(
                        path,
                        run_id,
                        fresh,
                        outbox=outbox,
                        emails_before=emails_before,
                        poisoned_before=poisoned_before,
                        regressed_before=regressed_before,
                    )
                )
            web_url = _publish_web(env)
        finally:
            demo.stop_children()
            stack.down(state_dir)
    emails = _emails(outbox)
    return {
        "old": str(files[0]),
        "new": str(files[-1]),
        "snapshots": [str(p) for p in files],
        "source": source,
        "regions_checked": checked,
        "reports": _report_entries(reports, demo.matched),
        "emails": [{k: e[k] for k in ("recipient", "region", "file", "subject")} for e in emails],
        "channel_messages": _channel_messages(outbox),
        "delivery": delivery,
        "steps": steps,
        "seconds": round(time.monotonic() - started, 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "workers": workers,
        "web": web_url,
    }


def print_summary(result: dict[str, Any]) -> None:
    by_region = {e["region"]: e["file"] for e in result["emails"]}
    digest = result.get("delivery") == "digest"
    print(
        f"\nservicetags-watch demo: {' → '.join(Path(p).name for p in result['snapshots'])}"
        f" (source {result['source']})"
    )
    if len(result["steps"]) > 1 or any(s["stale"] or s["poisoned"] for s in result["steps"]):
        for number, step in enumerate(result["steps"], start=1):
            events = [f"{r['region']} {r['region_event']}" for r in step["reports"] if r["region_event"]]
            print(
                f"  step {number} {Path(step['file']).name}: {len(step['reports'])} reports, "
                f"{len(step['emails'])} e-mails, {len(step['poisoned'])} poisoned, "
                f"{len(step['stale'])} stale" + (f"; regions: {', '.join(events)}" if events else "")
            )
    print(
        f"{result['regions_checked']} regions checked with {result['workers']} workers; "
        f"{len(result['reports'])} changed; {len(result['emails'])} e-mails, "
        f"{len(result.get('channel_messages', []))} channel messages "
        f"({result.get('delivery', 'report')} delivery)\n"
    )
    for report in result["reports"]:
        mark = f" [region {report['region_event']}]" if report.get("region_event") else ""
        print(f"  {report['summary']}{mark}")
        print(f"      report: reports/{report['blob']}")
        if report.get("rules_affected"):
            print(f"      impact: {report['impact']}")
        if not digest:
            print(f"      e-mail: {by_region.get(report['region'], '(none)')}")
    if digest:
        for entry in result["emails"]:
            print(f"  digest e-mail: {entry['file']}")
    for entry in result.get("channel_messages", []):
        print(f"  {entry['channel']}: {entry['file']}")
    totals: dict[str, int] = {}
    for report in result["reports"]:
        for key, value in report["counts"].items():
            totals[key] = totals.get(key, 0) + value
    if totals:
        print(
            f"\nTotals: {totals['tags_changed']} tags changed, {totals['tags_added']} added, "
            f"{totals['tags_removed']} removed; {totals['prefixes_added']} prefixes added, "
            f"{totals['prefixes_removed']} removed (summed over regions; `global` and regional "
            "tags overlap)"
        )
    print(f"\nWeb view (served while the stack ran; `servicetags local up` keeps one): {result['web']}")
    t = result["timings"]
    print(
        f"Timings: stack {t['stack']}s, baseline {t['baseline']}s, change {t['change']}s, "
        f"impact {t.get('impact', 0)}s, e-mail {t['notify']}s; total {result['seconds']}s"
    )


def main(argv: list[str], prog: str = "servicetags demo") -> int:
    parser = ArgumentParser(prog=prog, description="Run the whole pipeline locally on two real snapshots.")
    parser.add_argument(
        "--old", type=Path, default=DEFAULT_OLD, help="the earlier snapshot (default: bundled cn340)"
    )
    parser.add_argument(
        "--new", type=Path, default=DEFAULT_NEW, help="the later snapshot (default: bundled cn341)"
    )
    parser.add_argument(
        "--snapshots",
        type=Path,
        nargs="+",
        metavar="F",
        help="replay two or more files in this order (instead of --old/--new): the first "
        "is the baseline, each later one a full cycle",
    )
    parser.add_argument(
        "--source",
        choices=["arm", "download-center"],
        default="arm",
        help="what workers read: the local ARM endpoint (default) or the local Download Center page and file",
    )
    parser.add_argument("--regions", default="all", help="all (default) or R1,R2,... (ARM location names)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--outbox", type=Path, default=Path(".demo/outbox"), help="where e-mails land")
    parser.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    parser.add_argument(
        "--delivery",
        choices=["digest", "report"],
        default="digest",
        help="digest: one message per run per recipient and channel (default); report: one per change report",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 16:
        return fail(prog, f"--workers {args.workers} must be between 1 and 16")
    from core.errors import SnapshotError
    from core.prefixes import PrefixParser
    from runtime.snapshot_files import load_snapshot

    if args.snapshots is not None and len(args.snapshots) < 2:
        return fail(prog, "--snapshots needs two or more files (the first is the baseline)")
    files = args.snapshots or [args.old, args.new]
    try:
        parser_ = PrefixParser()
        for path in files:
            load_snapshot(path, parser_)  # fail fast, with the loader's message
    except SnapshotError as exc:
        return fail(prog, str(exc))

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `kill` stops everything too, like Ctrl-C
    # A shell starts background jobs with SIGINT ignored and Python keeps that: the demo wants
    # Ctrl-C (or SIGINT from a test harness) to stop it cleanly wherever it was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_demo(
            snapshots=[p.resolve() for p in files],
            regions=args.regions,
            workers=args.workers,
            outbox=args.outbox.resolve(),
            progress=Progress(),
            source=args.source,
            delivery=args.delivery,
        )
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    print_summary(result)
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
