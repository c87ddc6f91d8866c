"""`servicetags diff OLD NEW`: print the change report between two snapshot files.

Imports nothing from the Azure SDKs, so it starts fast.
"""

from __future__ import annotations

import gc
import sys

from common.compare import compare
from common.errors import ServiceTagsError
from common.prefixes import PrefixParser
from common.render import RENDERERS
from common.snapshot import load_snapshot
from servicetags.argparsing import ArgumentParser, fail

EXIT_CHANGED = 1


def main(argv: list[str], prog: str = "servicetags diff") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Compare two service-tag snapshots (download file or ARM reply, plain or "
        "gzipped) and print what changed.",
    )
    parser.add_argument("old", metavar="OLD", help="the earlier snapshot file")
    parser.add_argument("new", metavar="NEW", help="the later snapshot file")
    parser.add_argument("--region", default="all",
                        help="ARM location name (e.g. francecentral), 'global' for region-less "
                        "tags, or 'all' (default)")
    parser.add_argument("--format", choices=sorted(RENDERERS), default="json",
                        help="output format (default: json, the report contract)")
    parser.add_argument("--exit-code", action="store_true",
                        help="exit 1 when something changed (0 otherwise, 2 on error)")
    args = parser.parse_args(argv)

    # A short-lived process that builds ~200,000 long-lived objects and no garbage cycles:
    # automatic collections would only rescan them (~20% of the run time).
    gc.disable()
    prefixes = PrefixParser()
    try:
        old = load_snapshot(args.old, prefixes)
        new = load_snapshot(args.new, prefixes)
        report = compare(old, new, region=args.region, parser=prefixes)
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    try:
        sys.stdout.write(RENDERERS[args.format](report))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; that is not an error of ours.
        sys.stderr.close()
    if args.exit_code and report["tags"]:
        return EXIT_CHANGED
    return 0
