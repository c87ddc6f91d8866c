"""Rules from local files: ARM JSON as `az … list`, `az graph query` or an export gives it.

A path is a file or a folder (every `*.json` under it, in name order). Any problem is one
RulesError naming the file and, where there is one, the resource.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from core.rules import RulesError, RuleSet, parse_rules


def rule_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not found:
                raise RulesError(str(path), None, "folder holds no *.json rules file")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise RulesError(str(path), None, "no such file or folder")
    return out


def read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesError(str(path), None, f"cannot read ({exc.strerror})") from None
    try:
        # `az` on Windows writes a byte-order mark.
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise RulesError(str(path), None, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RulesError(
            str(path), None, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


def _documents(paths: Iterable[Path]) -> Iterator[tuple[str, Any]]:
    for path in paths:
        yield str(path), read_json(path)


def read_rules(paths: Iterable[str | os.PathLike[str]]) -> RuleSet:
    return parse_rules(_documents(rule_files(paths)))
