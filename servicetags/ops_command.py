"""`servicetags requeue` and `servicetags status`: the operator's view of the pipeline."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from core.errors import ServiceTagsError
from runtime.arguments import ArgumentParser, fail
from runtime.config import Env

# `requeue --queue` choices: every consumer's queue (the producer's regions, the notifier's
# change-events and run-deadlines, the impact step's impact).
QUEUE_CHOICES = ("regions", "change-events", "run-deadlines", "impact")


def _clients(env: Env) -> Any:
    from runtime.adapters.storage import StorageSettings, open_storage

    return open_storage(StorageSettings.from_env(env), env.cloud())


def queue_names(env: Env, settings: Any) -> dict[str, str]:
    """Every queue of the pipeline, by the name `requeue --queue` takes, as configured."""
    return {
        "regions": settings.regions_queue,
        "change-events": settings.events_queue,
        "run-deadlines": env.str("SERVICETAGS_DEADLINES_QUEUE") or "run-deadlines",
        "impact": env.str("SERVICETAGS_IMPACT_QUEUE") or "impact",
    }


def requeue_main(argv: list[str], prog: str) -> int:
    from runtime.poison_queues import message_region, requeue

    parser = ArgumentParser(prog=prog, description="Move poisoned messages back to their queue.")
    parser.add_argument(
        "--queue",
        default="regions",
        choices=list(QUEUE_CHOICES),
        help="which queue's poison queue to empty (default: regions)",
    )
    parser.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="R",
        help="only messages for this region (repeatable; regions queue only)",
    )
    args = parser.parse_args(argv)
    if args.region and args.queue != "regions":
        return fail(prog, "--region applies to the regions queue only")
    try:
        env = Env()
        clients = _clients(env)
        queue_name = queue_names(env, clients.settings)[args.queue]
        wanted = {r.lower() for r in args.region}
        moved = requeue(
            clients.poison(queue_name),
            clients.queue(queue_name),
            keep=lambda content: not wanted or message_region(content) in wanted,
        )
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    print(f"requeued {moved} message{'s' if moved != 1 else ''} from {queue_name}-poison to {queue_name}")
    return 0


def collect_status(clients: Any, cloud: str, queues: Iterable[str] | None = None) -> dict[str, Any]:
    """`queues`: the pipeline's queues (each is shown with its `-poison`); by default those
    of `queue_names` with the default names of the steps that have no storage setting."""
    from runtime.poison_queues import poisoned, with_poison

    s = clients.settings
    if queues is None:
        queues = queue_names(Env({}), s).values()
    queues = with_poison(queues)
    depths: dict[str, int | None] = {}
    poison: list[dict[str, Any]] = []
    for name in queues:
        queue = clients.queue(name)
        try:
            depths[name] = queue.depth()
        except Exception:  # a queue that does not exist yet is shown as such, not as an error
            depths[name] = None
            continue
        if name.endswith("-poison") and depths[name]:
            poison += [{"queue": name, **poisoned(m)} for m in queue.peek(32)]
    regions = []
    snapshots = clients.container(s.snapshots_container)
    try:
        names = [n for n in snapshots.names(f"{cloud}/") if n.endswith("/latest.json")]
    except Exception:
        names = []
    for name in sorted(names):
        blob = snapshots.read(name)
        if blob is not None:
            regions.append(_region_row(name, blob.data))
    cloud_blob = snapshots.read(f"{cloud}/regions.json") if names else None
    try:
        cloud_doc = json.loads(cloud_blob.data) if cloud_blob else {}
    except ValueError:
        cloud_doc = {}  # unreadable: the regions are still listed from their own states
    if not isinstance(cloud_doc, dict):
        cloud_doc = {}
    return {
        "cloud": cloud,
        "queues": depths,
        "poisoned": poison,
        "regions": regions,
        "watched_since": cloud_doc.get("watched_since"),
        "retired": cloud_doc.get("retired") or {},
    }


def _number(text: Any) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None


def region_status(state: dict[str, Any]) -> dict[str, Any]:
    """One region's line of `status`: its last check, its lifecycle, and how far the observed
    source (the API, when the file is primary) is behind."""
    out = {
        k: state.get(k)
        for k in (
            "region",
            "last_checked_at",
            "location_change_number",
            "changeNumber",
            "last_change_at",
            "last_report",
            "last_outcome",
            "last_report_propagated_at",
        )
    }
    retired = state.get("retired") or None
    out["retired_since"] = retired.get("since") if isinstance(retired, dict) else None
    stale = state.get("stale") if state.get("last_outcome") == "stale" else None
    out["stale"] = stale if isinstance(stale, dict) else None
    observed = state.get("observed")
    if isinstance(observed, dict) and "change_number" in observed:
        primary, seen = _number(state.get("location_change_number")), _number(observed.get("change_number"))
        out["observed"] = {
            "change_number": observed.get("change_number"),
            "equal": observed.get("equal"),
            "since": observed.get("since"),
            "error": observed.get("error"),
            # Change numbers behind the primary; 0 once the contents agree.
            "lag": 0
            if observed.get("equal")
            else (primary - seen if primary is not None and seen is not None else None),
        }
    else:
        out["observed"] = None
    return out


def _region_row(name: str, data: bytes) -> dict[str, Any]:
    """One region's state; a corrupt state blob is shown as such, never a crash."""
    try:
        state = json.loads(data)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        region = name.rsplit("/", 2)[-2] if name.count("/") >= 2 else name
        return {**region_status({}), "region": region, "last_report": f"(unreadable state blob {name})"}
    return region_status(state)


def _print_status(status: dict[str, Any]) -> None:
    print("Queues")
    for name, depth in status["queues"].items():
        print(f"  {name:28} {'(missing)' if depth is None else depth}")
    print(f"\nPoisoned messages ({len(status['poisoned'])} shown)")
    for p in status["poisoned"]:
        content = _cell(p["content"])
        content = content if len(content) <= 80 else content[:77] + "..."
        print(
            f"  [{p['queue']}] {p.get('poisoned_at') or '?'} tries={p.get('dequeue_count')} "
            f"reason: {_cell(p['reason'])}\n      message: {content}"
        )
    watched = f", watched since {_cell(status['watched_since'])}" if status.get("watched_since") else ""
    print(f"\nRegions ({status['cloud']}, {len(status['regions'])}{watched})")
    print(f"  {'region':22} {'last check':22} {'location cn':>11} {'cn':>5}  last change")
    for r in status["regions"]:
        print(
            f"  {_cell(r['region']):22} {_cell(r['last_checked_at'], '-'):22} "
            f"{_cell(r['location_change_number'], '-'):>11} {_cell(r['changeNumber'], '-'):>5}  "
            f"{_cell(r['last_change_at'], 'none')} {_cell(r['last_report'])}"
        )
        for note in _region_notes(r):
            print(f"      {_cell(note)}")


def _cell(value: Any, empty: str = "") -> str:
    """A state field as text: whatever type a hand-edited blob holds, no control characters."""
    text = empty if value is None or value == "" else str(value)
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _region_notes(r: dict[str, Any]) -> list[str]:
    notes = []
    if r.get("retired_since"):
        notes.append(f"retired since {r['retired_since']} (missing from a newer reply; not enqueued)")
    if r.get("stale"):
        stale = r["stale"]
        notes.append(
            f"stale since {stale.get('since')}: the source served change "
            f"{stale.get('change_number')}, older than the {stale.get('recorded')} recorded"
        )
    observed = r.get("observed")
    if observed:
        if observed.get("equal"):
            notes.append(
                f"observed source: same content (change {observed['change_number']}) "
                f"since {observed['since']}"
            )
        else:
            lag = observed.get("lag")
            behind = f"{lag} change{'s' if lag != 1 else ''} behind" if lag is not None else "differs"
            notes.append(
                f"observed source: {behind} (change {observed['change_number']}) since {observed['since']}"
            )
    if r.get("last_report_propagated_at"):
        notes.append(f"last report propagated to the observed source at {r['last_report_propagated_at']}")
    return notes


def status_main(argv: list[str], prog: str) -> int:
    parser = ArgumentParser(prog=prog, description="Queue depths, poisoned messages and region checks.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        env = Env()
        clients = _clients(env)
        status = collect_status(clients, env.cloud(), queue_names(env, clients.settings).values())
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
    else:
        _print_status(status)
    return 0


def main(argv: list[str], prog: str = "servicetags") -> int:
    command, rest = argv[0], argv[1:]
    if command == "requeue":
        return requeue_main(rest, prog)
    return status_main(rest, prog)
