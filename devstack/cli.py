"""`servicetags local up|down`: the local stack for development and the demo."""

from __future__ import annotations

import shlex
from pathlib import Path

from core.errors import ServiceTagsError
from runtime.arguments import ArgumentParser, fail


def main(argv: list[str], prog: str = "servicetags local") -> int:
    from devstack import stack

    parser = ArgumentParser(
        prog=prog,
        description="Start or stop the local stack: Azurite, the local ARM "
        "service-tag endpoint, the blob-event relay and an SMTP sink.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("up", help="start the stack in the background and print its environment")
    start.add_argument("--state-dir", type=Path, default=Path(".local"), help="default: ./.local")
    start.add_argument(
        "--api-fault-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of ARM requests answered with a fault (0 to 1)",
    )
    start.add_argument(
        "--snapshot",
        type=Path,
        default=stack.DEFAULT_SNAPSHOT,
        help="the service-tag file the ARM endpoint serves first",
    )
    start.add_argument("--event-schema", choices=["eventgrid", "cloudevents"], default="eventgrid")
    stop = sub.add_parser("down", help="stop what `up` started")
    stop.add_argument("--state-dir", type=Path, default=Path(".local"), help="default: ./.local")
    args = parser.parse_args(argv)

    if args.action == "down":
        stopped = stack.down(args.state_dir)
        print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if not 0 <= args.api_fault_rate <= 1:
        return fail(prog, f"--api-fault-rate {args.api_fault_rate} must be between 0 and 1")
    if not args.snapshot.is_file():
        return fail(prog, f"--snapshot {args.snapshot}: no such file")
    try:
        env = stack.up(
            args.state_dir,
            snapshot=args.snapshot,
            fault_rate=args.api_fault_rate,
            event_schema=args.event_schema,
        )
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    # KEY=VALUE lines, shell-quoted, so `set -a; eval "$(servicetags local up)"` works.
    for key, value in env.items():
        print(f"{key}={shlex.quote(value)}")
    return 0
