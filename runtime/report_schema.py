"""Validation of change report documents against the published JSON Schema.

The schema file (`schemas/change-report.v1.json`) is the contract other tools can use too;
this module only loads it and turns the most relevant violation into one readable line, so a
bad report is logged and poisoned with a reason instead of failing somewhere in a renderer.
"""

from __future__ import annotations

import json
import reprlib
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from core.errors import ServiceTagsError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "change-report.v1.json"

# jsonschema messages repeat the offending value; a whole tag list would make a useless log line.
_MAX_PROBLEM_CHARS = 200


class ReportSchemaError(ServiceTagsError):
    """A document that is not a valid change report. `path` is a JSON path such as `$.tags[2].status`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"change report invalid at {path}: {problem}")
        self.path = path
        self.problem = problem


@cache
def report_schema() -> dict[str, Any]:
    """The change report schema (draft 2020-12) as a dict."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@cache
def _validator() -> Draft202012Validator:
    schema = report_schema()
    Draft202012Validator.check_schema(schema)  # a broken schema file is our bug: fail loudly once
    return Draft202012Validator(schema)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _MAX_PROBLEM_CHARS:
        return flat
    return flat[: _MAX_PROBLEM_CHARS - 1] + "…"


def _problem(error: ValidationError) -> str:
    # Patterns and length limits read badly as raw jsonschema messages (a 200-character regex,
    # "is too long" for a list that must be empty); the schema's own description says it better.
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description and error.validator in ("pattern", "maxItems"):
        return f"{reprlib.repr(error.instance)} is not {description}"
    return error.message


def validate_report(doc: object) -> dict[str, Any]:
    """Return `doc` unchanged when it is a valid change report; raise ReportSchemaError otherwise."""
    error = best_match(_validator().iter_errors(doc))
    if error is not None:
        raise ReportSchemaError(error.json_path, _one_line(_problem(error)))
    assert isinstance(doc, dict)  # guaranteed by the schema's top-level "type": "object"
    return doc
