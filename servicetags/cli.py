"""The `servicetags` command: a thin dispatcher to each component's entry point.

Subcommand modules are imported only when chosen, so `servicetags diff` never pays for
the Azure SDK imports that the worker and notifier need.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with `main(argv, prog) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "diff": ("servicetags.diff_command", "compare two service-tag snapshots and print a change report"),
    "impact": ("servicetags.impact_command", "show which of your own network rules a change report touches"),
    "impact-worker": ("impact.main", "match new reports from the impact queue against your rules"),
    "produce": ("producer.main", "enqueue one message per region (plus global)"),
    "worker": ("worker.main", "check regions from the queue and write snapshots and reports"),
    "notifier": ("notifier.main", "turn report BlobCreated events into log records and e-mail"),
    "requeue": ("servicetags.ops_command", "move poisoned messages back to their queue"),
    "status": ("servicetags.ops_command", "show queue depths, poisoned messages and region checks"),
    "local": ("devstack.cli", "start or stop the local stack (Azurite, ARM endpoint, relay, SMTP)"),
    "demo": ("devstack.demo", "run the whole pipeline locally on real snapshots"),
    "doctor": ("servicetags.doctor", "check that each component can do its job, with its own identity"),
    "import": ("servicetags.import_command", "backfill archived service-tag files into the history"),
    "lookup": ("servicetags.history_command", "which tags hold an address or overlap a CIDR, and since when"),
    "history": ("servicetags.history_command", "when prefixes joined or left the tags of an address or tag"),
    "publish": ("web.publish", "bring the history index and the static web view up to date"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: servicetags COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "Run `servicetags COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"servicetags: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    prog = f"servicetags {name}"
    if name == "diff":
        # Run as the process itself (no argv given), diff may end it without teardown.
        return int(module.main(rest, prog=prog, hard_exit=argv is None))
    # ops_command and history_command serve two subcommands each, so they are told which one.
    two = {"requeue", "status", "lookup", "history"}
    return int(module.main([name, *rest] if name in two else rest, prog=prog))


if __name__ == "__main__":
    sys.exit(main())
