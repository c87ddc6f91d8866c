"""Decoding JSON that comes from outside (files, API replies, queue messages, requests). Pure.

`json.loads` raises more than JSONDecodeError on hostile input, and accepts more than JSON:
- `ValueError` for an integer of more than 4,300 digits (CPython's conversion limit);
- `RecursionError` for deep nesting (about 1,000 levels);
- `NaN`, `Infinity` and `-Infinity`, which are not JSON;
- `"\\ud800"`, a lone surrogate: a Python string that cannot be encoded as UTF-8 again, so it
  fails later, far from its cause (writing a blob, printing a report, hashing a tag).
`load_json` turns each of these into one `JsonInputError` whose text says what was wrong;
callers wrap it in their own error kind (SnapshotError, BadMessage, ConfigError).
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

# Only a \u escape can put a surrogate into a decoded string (UTF-8 text cannot hold one), so
# documents without such an escape, the real ones, skip the walk that finds it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonInputError(ValueError):
    """Input that is not JSON we accept. `str(error)` completes "<source> ..."."""


def _no_constant(name: str) -> NoReturn:
    raise JsonInputError(f"is not valid JSON ({name} is not a JSON value)")


def load_json(data: str | bytes) -> Any:
    """The decoded document; bytes must be UTF-8 (json.loads alone would also guess UTF-16
    and UTF-32), a byte order mark is allowed. Raises JsonInputError only."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        doc = json.loads(text, parse_constant=_no_constant)
    except JsonInputError:
        raise
    except UnicodeDecodeError:
        raise JsonInputError("is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise JsonInputError(f"is not valid JSON ({where}: {exc.msg})") from None
    except RecursionError:
        raise JsonInputError("nests arrays or objects too deeply to be read") from None
    except ValueError as exc:  # the integer digit limit; its text names sys.set_int_max_str_digits
        raise JsonInputError(f"holds a number that cannot be read ({str(exc).split(';')[0]})") from None
    if _SURROGATE_ESCAPE.search(text):
        path = lone_surrogate_path(doc)
        if path is not None:
            shown = path if len(path) <= 120 else path[:117] + "..."
            raise JsonInputError(f"holds a lone UTF-16 surrogate (not Unicode text) at {shown}")
    return doc


def lone_surrogate_path(doc: Any) -> str | None:
    """Where the first string (key or value) holding a lone surrogate is, as a JSON path."""
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _SURROGATE.search(key):
                    return f"{path} (a key)"
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None
