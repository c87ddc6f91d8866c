"""`servicetags impact REPORT --rules FILE|DIR`: which of your rules a change report touches.

Works on any report `servicetags diff` (or a worker) writes, against ARM JSON exports of your
NSGs, firewall policy rule collection groups, classic firewalls, IP Groups, route tables and
storage / key vault network ACLs. With `--snapshot` (the report's new snapshot file) it also
finds literal lists that copy a changed tag and says how to bring them back in step.
Imports nothing from the Azure SDKs.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

from core.errors import InvalidPrefixError, ServiceTagsError
from core.impact import check_report, impact
from core.impact_render import RENDERERS
from runtime.arguments import ArgumentParser, fail

EXIT_AFFECTED = 1


class ReportFileError(ServiceTagsError):
    pass


def load_report(path: str) -> dict[str, Any]:
    """A change report file, checked for what the matching reads."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ReportFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportFileError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportFileError(f"{path}: not JSON ({exc})") from None
    return check_report(doc, path)  # ReportError names the file


def main(argv: list[str], prog: str = "servicetags impact") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Show which of your NSG, firewall, IP Group, route and "
        "network ACL rules a change report touches.",
    )
    parser.add_argument("report", metavar="REPORT", help="a change report (JSON, as servicetags diff writes)")
    parser.add_argument(
        "--rules",
        action="append",
        required=True,
        metavar="FILE|DIR",
        help="ARM JSON of your resources (az … list, az graph query, an export); "
        "a folder means every *.json under it; repeatable",
    )
    parser.add_argument(
        "--snapshot",
        metavar="FILE",
        help="the report's new snapshot file: also find lists that copy a changed tag",
    )
    parser.add_argument(
        "--format", choices=sorted(RENDERERS), default="text", help="output format (default: text)"
    )
    parser.add_argument("--exit-code", action="store_true", help="exit 1 when a rule is touched")
    args = parser.parse_args(argv)
    # Reading 10,000 rules builds many long-lived objects and no cycles: automatic
    # collections would only rescan them.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc = run(args.report, args.rules, snapshot=args.snapshot)
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    finally:
        if gc_was_enabled:
            gc.enable()
    try:
        sys.stdout.write(RENDERERS[args.format](doc))
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stderr.close()
    return EXIT_AFFECTED if args.exit_code and doc["affected"] else 0


def run(report_path: str, rule_paths: list[str], *, snapshot: str | None = None) -> dict[str, Any]:
    from impact.rule_files import read_rules

    report = load_report(report_path)
    rules = read_rules(rule_paths)
    prefixes = None
    if snapshot is not None:
        from runtime.snapshot_files import load_snapshot

        prefixes = {tag.id: tag.prefixes for tag in load_snapshot(snapshot).tags.values()}
    try:
        return impact(
            report, rules.rules, resources=rules.resources, tag_prefixes=prefixes, report_name=report_path
        )
    except InvalidPrefixError as exc:
        raise ReportFileError(f"{report_path}: not a change report ({exc})") from None
