"""`servicetags diff OLD NEW`: print the change report between two snapshot files.

Imports nothing from the Azure SDKs, so it starts fast.
"""

from __future__ import annotations

import gc
import os
import sys
from argparse import Namespace
from functools import partial
from typing import Any

from core.canonical import tag_digests
from core.change_report import change_report, report_of, select_region
from core.diff import diff_tags
from core.errors import ServiceTagsError
from core.model import Snapshot
from core.prefixes import PrefixParser
from core.render import RENDERERS
from core.snapshot import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES_VARIABLE,
    baseline_of,
    build_snapshot,
    checked,
    snapshot_from_document,
)
from runtime.arguments import ArgumentParser, fail
from runtime.config import Env
from runtime.snapshot_files import read_document
from servicetags import forked

EXIT_CHANGED = 1


def main(argv: list[str], prog: str = "servicetags diff", *, hard_exit: bool = False) -> int:
    """`hard_exit`: end the process with `os._exit` once the report is written (the
    console command; never in-process callers such as tests)."""
    parser = ArgumentParser(
        prog=prog,
        description="Compare two service-tag snapshots (download file or ARM reply, plain or "
        "gzipped) and print what changed.",
    )
    parser.add_argument("old", metavar="OLD", help="the earlier snapshot file")
    parser.add_argument("new", metavar="NEW", help="the later snapshot file")
    parser.add_argument(
        "--region",
        default="all",
        help="ARM location name (e.g. francecentral), 'global' for region-less tags, or 'all' (default)",
    )
    parser.add_argument(
        "--format",
        choices=sorted(RENDERERS),
        default="json",
        help="output format (default: json, the report contract)",
    )
    parser.add_argument(
        "--exit-code", action="store_true", help="exit 1 when something changed (0 otherwise, 2 on error)"
    )
    args = parser.parse_args(argv)

    # A short-lived process that builds ~200,000 long-lived objects and no garbage cycles:
    # automatic collections would only rescan them (~20% of the run time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(args, prog, hard_exit=hard_exit)
    finally:
        if gc_was_enabled:
            gc.enable()


def _run(args: Namespace, prog: str, *, hard_exit: bool) -> int:
    try:
        limit = Env().int(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES, minimum=1024)
        # The snapshots stay referenced until the end: see hard_exit.
        *_snapshots, report = compare_files(
            args.old, args.new, region=args.region, parallel=forked.available(), limit=limit
        )
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    code = EXIT_CHANGED if args.exit_code and report["tags"] else 0
    if sys.stdout is None:  # started with file descriptor 1 closed
        return fail(prog, "cannot write the report: standard output is closed")
    try:
        sys.stdout.write(RENDERERS[args.format](report))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; that is not an error of ours.
        _discard_stdout()
        sys.stderr.close()
    except OSError as exc:  # a full disk (/dev/full), a closed descriptor, an I/O error
        _discard_stdout()
        return fail(prog, f"cannot write the report: {exc.strerror or exc}")
    if hard_exit:
        # The process ends here and everything is written: skip freeing the two snapshots
        # object by object, which would take longer than diffing them.
        os._exit(code)
    return code


def _discard_stdout() -> None:
    """Drop what is still buffered for stdout, so exiting does not fail on it a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - no descriptor to replace
        pass


def compare_files(
    old_path: str,
    new_path: str,
    *,
    region: str = "all",
    parallel: bool = False,
    limit: int = DEFAULT_MAX_BYTES,
) -> tuple[Snapshot, Snapshot, dict[str, Any]]:
    """Both snapshot files, loaded, and the change report between them.

    With `parallel`, a forked child checks the old snapshot's prefixes and hashes its tags
    (a third of the work, and independent of the new file) while this process reads the new
    file and diffs: the core's own steps (`build_snapshot`, `checked`, `diff_tags`,
    `report_of`), run in two processes. The child sees the old snapshot as it is in memory:
    nothing to copy or parse again.
    """
    parser = PrefixParser()
    old_doc = read_document(old_path, limit=limit)
    if parallel:
        old = build_snapshot(old_doc, old_path)
        pending = forked.Pending(partial(_check_and_hash, old_doc, old))
        try:
            new = _load_against(new_path, old_doc, old, parser, limit)
            old_sel, new_sel, name = select_region(old, new, region)
            changes = diff_tags(old_sel.tags, new_sel.tags, parser)
            normalised, old_digests = pending.result()
        except Exception:
            # An error in the old file comes first, as it would serially. Diffing an old file
            # not yet checked can also fail on what the check reports properly: an invalid
            # prefix (InvalidPrefixError from a range), so anything is re-raised only after it.
            pending.result()
            raise
        finally:
            pending.close()
        if normalised:
            return old, new, report_of(old_sel, new_sel, name, changes, old_digests)
        # Some old prefix was not in normalised form, so the diff above compared raw text:
        # rare (Microsoft publishes normalised prefixes), and redone here the plain way.
    old = snapshot_from_document(old_doc, old_path, parser)
    new = _load_against(new_path, old_doc, old, parser, limit)
    return old, new, change_report(old, new, region=region, parser=parser)


def _load_against(path: str, old_doc: Any, old: Snapshot, parser: PrefixParser, limit: int) -> Snapshot:
    """The new snapshot, its unchanged tags being the old ones (see `Baseline`)."""
    return snapshot_from_document(
        read_document(path, limit=limit), path, parser, baseline=baseline_of(old_doc, old)
    )


def _check_and_hash(doc: Any, snapshot: Snapshot) -> tuple[bool, dict[str, bytes]]:
    """Whether every prefix of the snapshot is valid (else SnapshotError) and already
    normalised, and its tag digests."""
    return checked(snapshot, doc, PrefixParser()) is snapshot, tag_digests(snapshot)
