"""`servicetags requeue` and `servicetags status`: the operator's view of the pipeline."""

from __future__ import annotations

import json
import sys
from typing import Any

from common.config import Env
from common.errors import ServiceTagsError
from servicetags.argparsing import ArgumentParser, fail


def _clients(env: Env) -> Any:
    from common.adapters.storage import StorageClients, StorageSettings
    from common.identity import azure_credential

    settings = StorageSettings.from_env(env)
    return StorageClients(settings, None if settings.local else azure_credential(env.cloud()))


def requeue_main(argv: list[str], prog: str) -> int:
    from common.operations import message_region, requeue

    parser = ArgumentParser(prog=prog, description="Move poisoned messages back to their queue.")
    parser.add_argument("--queue", default="regions", choices=["regions", "change-events", "impact"],
                        help="which queue's poison queue to empty (default: regions)")
    parser.add_argument("--region", action="append", default=[], metavar="R",
                        help="only messages for this region (repeatable; regions queue only)")
    args = parser.parse_args(argv)
    if args.region and args.queue != "regions":
        return fail(prog, "--region applies to the regions queue only")
    try:
        env = Env()
        clients = _clients(env)
        names = clients.settings
        queue_name = {"regions": names.regions_queue, "change-events": names.events_queue,
                      "impact": env.str("SERVICETAGS_IMPACT_QUEUE") or "impact"}[args.queue]
        wanted = {r.lower() for r in args.region}
        moved = requeue(clients.queue(f"{queue_name}-poison"), clients.queue(queue_name),
                        keep=lambda content: not wanted or message_region(content) in wanted)
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    print(f"requeued {moved} message{'s' if moved != 1 else ''} from {queue_name}-poison to {queue_name}")
    return 0


def collect_status(clients: Any, cloud: str) -> dict[str, Any]:
    from common.operations import poisoned

    s = clients.settings
    queues = [s.regions_queue, f"{s.regions_queue}-poison", s.events_queue, f"{s.events_queue}-poison"]
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
    return {"cloud": cloud, "queues": depths, "poisoned": poison, "regions": regions}


_REGION_FIELDS = ("region", "last_checked_at", "location_change_number", "changeNumber",
                  "last_change_at", "last_report")


def _region_row(name: str, data: bytes) -> dict[str, Any]:
    """One region's state; a corrupt state blob is shown as such, never a crash."""
    try:
        state = json.loads(data)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        region = name.rsplit("/", 2)[-2] if name.count("/") >= 2 else name
        return {**dict.fromkeys(_REGION_FIELDS), "region": region,
                "last_report": f"(unreadable state blob {name})"}
    return {k: state.get(k) for k in _REGION_FIELDS}


def _print_status(status: dict[str, Any]) -> None:
    print("Queues")
    for name, depth in status["queues"].items():
        print(f"  {name:28} {'(missing)' if depth is None else depth}")
    print(f"\nPoisoned messages ({len(status['poisoned'])} shown)")
    for p in status["poisoned"]:
        content = _cell(p["content"])
        content = content if len(content) <= 80 else content[:77] + "..."
        print(f"  [{p['queue']}] {p.get('poisoned_at') or '?'} tries={p.get('dequeue_count')} "
              f"reason: {_cell(p['reason'])}\n      message: {content}")
    print(f"\nRegions ({status['cloud']}, {len(status['regions'])})")
    print(f"  {'region':22} {'last check':22} {'location cn':>11} {'cn':>5}  last change")
    for r in status["regions"]:
        print(f"  {_cell(r['region']):22} {_cell(r['last_checked_at'], '-'):22} "
              f"{_cell(r['location_change_number'], '-'):>11} {_cell(r['changeNumber'], '-'):>5}  "
              f"{_cell(r['last_change_at'], 'none')} {_cell(r['last_report'])}")


def _cell(value: Any, empty: str = "") -> str:
    """A state field as text: whatever type a hand-edited blob holds, no control characters."""
    text = empty if value is None or value == "" else str(value)
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def status_main(argv: list[str], prog: str) -> int:
    parser = ArgumentParser(prog=prog, description="Queue depths, poisoned messages and region checks.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        env = Env()
        status = collect_status(_clients(env), env.cloud())
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
