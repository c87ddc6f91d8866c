"""`servicetags lookup ADDRESS|CIDR` and `servicetags history ADDRESS|CIDR|TAG`.

Both read the history index: from `--index FILE` (or SERVICETAGS_HISTORY_INDEX), else from
the history container of the configured storage account. Reading a local file imports no
Azure SDK, so a lookup answers in about the time Python takes to start.

Exit codes: 0 found, 1 nothing found (lookup), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import json
import os
import sys

from runtime.arguments import fail

TYPE_CHECKING = False  # what typing.TYPE_CHECKING is at run time, without importing typing
if TYPE_CHECKING:
    from typing import Any

NOT_FOUND = 1


def _map(path: str) -> Any:
    """The file's bytes, mapped: a lookup touches a few pages of the index, not all of it."""
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _load(args: Any, prog: str) -> Any:
    """The index, or an error message (str)."""
    from core.history_index import Index, IndexError_

    path = args.index or os.environ.get("SERVICETAGS_HISTORY_INDEX")
    try:
        if path:
            try:
                data = _map(path)
            except OSError as exc:
                return f"{path}: cannot read the index ({exc.strerror})"
            index = Index.from_bytes(data, str(path))
        else:
            from core.errors import ServiceTagsError
            from runtime.config import Env
            from servicetags.import_command import stores_from_env

            env = Env()
            try:
                cloud = args.cloud or env.cloud()
                from runtime.history_store import load_index

                loaded = load_index(stores_from_env(env).history, cloud)
            except ServiceTagsError as exc:
                return str(exc)
            if loaded is None:
                return f"no history index for {cloud} yet (run `servicetags import` or `servicetags publish`)"
            index = loaded
    except IndexError_ as exc:
        return str(exc)
    if args.cloud and index.cloud.lower() != args.cloud.lower():
        return f"the index is for cloud {index.cloud}, not {args.cloud}"
    if index.empty:
        return f"the {index.cloud} history index is empty (nothing imported or checked yet)"
    return index


class _Args:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def _quick(argv: list[str], options: tuple[str, ...]) -> Any:
    """The common, well-formed command lines without argparse (its import and set-up are a
    tenth of a cold lookup); None for anything else, which argparse then checks and explains."""
    values: dict[str, Any] = dict.fromkeys(("cloud", "index", "at", "change", "since"))
    values["format"] = "text"
    query = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in options or "=" in name:
                return None
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    return None
                i += 1
                value = argv[i]
            values[name] = value
        elif query is None and not arg.startswith("-"):
            query = arg
        else:
            return None
        i += 1
    if query is None or values["format"] not in ("text", "json") or (values["at"] and values["change"]):
        return None
    return _Args(query=query, **values)


def _common(parser: Any) -> None:
    parser.add_argument("--cloud", help="Public, AzureGovernment or AzureChina (default: SERVICETAGS_CLOUD)")
    parser.add_argument(
        "--index",
        metavar="FILE",
        help="read the index from this file (default: SERVICETAGS_HISTORY_INDEX, else blob storage)",
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")


def _date(text: str) -> str:
    import datetime as dt

    try:
        dt.date.fromisoformat(text[:10])
        if len(text) > 10:
            dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return text


def lookup_main(argv: list[str], prog: str) -> int:
    from core.history_index import QueryError

    args = _quick(argv, ("cloud", "index", "format", "at", "change"))
    if args is None:
        from runtime.arguments import ArgumentParser

        parser = ArgumentParser(
            prog=prog,
            description="Which service tags hold an address, or overlap a CIDR block, and since when.",
        )
        parser.add_argument("query", metavar="ADDRESS|CIDR")
        _common(parser)
        when = parser.add_mutually_exclusive_group()
        when.add_argument(
            "--at", metavar="DATE", help="as of this date (YYYY-MM-DD); default: the latest change"
        )
        when.add_argument("--change", metavar="N", help="as of this change number")
        args = parser.parse_args(argv)
    index = _load(args, prog)
    if isinstance(index, str):
        return fail(prog, index)
    try:
        at = (
            index.change_index(args.change)
            if args.change
            else index.at_date(_date(args.at))
            if args.at
            else index.latest()
        )
        hits = index.lookup(args.query, at=at)
    except (QueryError, ValueError) as exc:
        return fail(prog, str(exc))
    cn, date = index.changes[at]
    if args.format == "json":
        doc = {
            "query": args.query.strip(),
            "cloud": index.cloud,
            "at": {"changeNumber": cn, "date": date},
            "matches": [
                {
                    "tag": h.tag,
                    "region": h.region,
                    "system_service": h.system_service,
                    "prefix": h.prefix,
                    "since": {"changeNumber": h.since_change, "date": h.since_date, "report": h.since_report},
                }
                for h in hits
            ],
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
    elif hits:
        print(f"{args.query.strip()} in {index.cloud} at change {cn} ({date[:10]}):")
        width = max(len(h.tag) for h in hits)
        for h in hits:
            origin = f"report {h.since_report}" if h.since_report else "first snapshot of the region"
            print(
                f"  {h.tag.ljust(width)}  region {h.region:20} service {h.system_service or '-':24} "
                f"prefix {h.prefix:20} since {h.since_date[:10]} (change {h.since_change}, {origin})"
            )
    else:
        print(
            f"{prog}: {args.query.strip()} is in no {index.cloud} service tag at change {cn}", file=sys.stderr
        )
    return 0 if hits else NOT_FOUND


def history_main(argv: list[str], prog: str) -> int:
    from core.history_index import QueryError

    args = _quick(argv, ("cloud", "index", "format", "since"))
    if args is None:
        from runtime.arguments import ArgumentParser

        parser = ArgumentParser(
            prog=prog,
            description="Every time a prefix joined or left a tag: for the "
            "blocks holding an address or overlapping a CIDR block, or for one tag.",
        )
        parser.add_argument("query", metavar="ADDRESS|CIDR|TAG")
        _common(parser)
        parser.add_argument("--since", metavar="DATE", help="only changes on or after this date (YYYY-MM-DD)")
        args = parser.parse_args(argv)
    index = _load(args, prog)
    if isinstance(index, str):
        return fail(prog, index)
    try:
        since = 0
        if args.since:
            since = index.at_date(_date(args.since))
            if index.changes[since][1][: len(args.since)] < args.since:
                since += 1  # the change found is before the date: start after it
        events = index.history(args.query, since=since)
    except (QueryError, ValueError) as exc:
        return fail(prog, str(exc))
    if args.format == "json":
        json.dump(
            {"query": args.query.strip(), "cloud": index.cloud, "events": [e._asdict() for e in events]},
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    if not events:
        print(f"{prog}: no joins or leaves for {args.query.strip()}", file=sys.stderr)
        return 0
    width = max(len(e.tag) for e in events)
    for e in events:
        said = f"report {e.report}" if e.report else "first snapshot of the region"
        print(
            f"{e.date[:10]}  change {e.change_number:>5}  {e.kind:6}  {e.tag.ljust(width)}  "
            f"{e.prefix:24} {said}"
        )
    return 0


def main(argv: list[str], prog: str = "servicetags") -> int:
    command, rest = argv[0], argv[1:]
    try:
        return lookup_main(rest, prog) if command == "lookup" else history_main(rest, prog)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
