"""Check Terraform configuration against the azurerm provider's own schema export.

`terraform validate` needs the provider binary, which cannot be downloaded here. The provider
publishes its schema (`.release/provider-schema.json` in hashicorp/terraform-provider-azurerm);
two tags of it are kept in tests/terraform/schemas/. This module holds every `resource`,
`data` and `provider` block of a directory tree of .tf files against it and reports, per
block and schema version:

- unknown arguments and blocks (and unknown resource or data source types);
- missing required arguments and blocks;
- computed-only attributes that are set;
- nested blocks above `maxItems` (or below `minItems`);
- literal values whose type cannot be converted to the argument's type (Terraform converts
  numbers and bools to strings and numeric/boolean strings back, so only what it would
  refuse is reported).

Expressions (references, function calls, conditionals) have no type before plan, so only
literals are type-checked. Blocks of providers without a schema here (github, the built-in
`terraform_remote_state`) are listed by `unchecked`, never silently passed: a type is
skipped only when its module's `required_providers` names a provider other than azurerm.

Parsing uses python-hcl2 (bc-python-hcl2), which renders block bodies with every attribute
value wrapped in a one-element list and object literals without that wrapping; that is how a
block written as `name = {...}` (or a map written as a block) is told apart.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

# Terraform's own meta-arguments, never part of a provider schema.
RESOURCE_META = frozenset(
    {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
)
DATA_META = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle"})
PROVIDER_META = frozenset({"alias", "version"})
# hcl2 bookkeeping keys.
HCL2_KEYS = {"__start_line__", "__end_line__"}
# SDKv2 "attributes as blocks": such a block may also be written `name = [{...}]`.
ATTRIBUTE_MODES = {"Auto", "Attr", "SchemaConfigModeAuto", "SchemaConfigModeAttr"}
BUILTIN_TYPES = {"terraform_remote_state", "terraform_data"}
AZURERM_SOURCE = "hashicorp/azurerm"

_WHOLE_EXPRESSION = re.compile(r"^\$\{.*\}$", re.DOTALL)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class Schema:
    version: str
    provider: dict[str, Any]
    resources: dict[str, Any]
    data_sources: dict[str, Any]


@cache
def load_schema(path: Path) -> Schema:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        document = json.load(fh)
    version = re.search(r"v(\d+\.\d+\.\d+)", path.name)
    body = document["providerSchema"]
    return Schema(
        version.group(1) if version else path.name, body["schema"], body["resources"], body["dataSources"]
    )


def schemas() -> list[Schema]:
    found = sorted(SCHEMA_DIR.glob("azurerm-v*.json.gz"))
    assert found, f"no provider schema exports in {SCHEMA_DIR}"
    return [load_schema(p) for p in found]


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # "resource azurerm_x.name" ...
    unchecked: list[str] = field(default_factory=list)  # blocks of providers without a schema


# ---------------------------------------------------------------------------------------
# Values as hcl2 renders them
# ---------------------------------------------------------------------------------------


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and bool(_WHOLE_EXPRESSION.match(value))


def _literal_kind(value: Any) -> str | None:
    """'string' | 'number' | 'bool' | 'list' | 'map' for a literal; None for an expression."""
    if _is_expression(value):
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return None


def _scalar_problem(value: Any, expected: str) -> str | None:
    """Why a literal cannot become a Terraform primitive of type `expected`, or None."""
    kind = _literal_kind(value)
    if kind is None:
        return None
    if expected == "TypeString":
        return None if kind in {"string", "number", "bool"} else f"a {kind} cannot be a string"
    if expected in {"TypeInt", "TypeFloat"}:
        text = str(value).strip() if kind in {"string", "number"} else None
        if text is None or not _NUMBER.match(text):
            return f"{value!r} is not a number"
        if expected == "TypeInt" and float(text) != int(float(text)):
            return f"{value!r} is not a whole number"
        return None
    if expected == "TypeBool":
        if kind == "bool" or (kind == "string" and value in {"true", "false"}):
            return None
        return f"{value!r} is not a bool"
    return None


def _value_problem(value: Any, spec: dict[str, Any]) -> str | None:  # noqa: PLR0912 - one branch per schema type
    """Type problems of an attribute literal against its schema entry."""
    kind = _literal_kind(value)
    if kind is None:
        return None
    tf_type = spec["type"]
    elem = spec.get("elem") or {}
    if tf_type in {"TypeString", "TypeInt", "TypeFloat", "TypeBool"}:
        return _scalar_problem(value, tf_type)
    if tf_type in {"TypeList", "TypeSet"}:
        if kind != "list":
            return f"expected a list, got a {kind}"
        if "maxItems" in spec and len(value) > spec["maxItems"]:
            return f"{len(value)} items, at most {spec['maxItems']} allowed"
        if "minItems" in spec and len(value) < spec["minItems"]:
            return f"{len(value)} items, at least {spec['minItems']} needed"
        if "type" in elem:
            for item in value:
                if problem := _scalar_problem(item, elem["type"]):
                    return f"item {item!r}: {problem}"
        return None
    if tf_type == "TypeMap":
        if kind != "map":
            return f"expected a map, got a {kind}"
        for key, item in value.items():
            if _literal_kind(item) in {"list", "map"}:
                return f"key {key!r}: a map holds single values"
            if "type" in elem and (problem := _scalar_problem(item, elem["type"])):
                return f"key {key!r}: {problem}"
    return None


def _is_block(spec: dict[str, Any]) -> bool:
    return isinstance(spec.get("elem"), dict) and "schema" in spec["elem"]


def _written_as_attribute(items: list[Any]) -> bool:
    """`name = {...}`: hcl2 leaves an object literal's values unwrapped."""
    return any(
        isinstance(item, dict) and any(not isinstance(v, list) for k, v in item.items() if k not in HCL2_KEYS)
        for item in items
    )


# ---------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------


def _check_body(
    body: dict[str, Any],
    schema: dict[str, Any],
    where: str,
    problems: list[str],
    *,
    meta: frozenset[str] = frozenset(),
) -> None:
    dynamic_names = _check_dynamic_blocks(body, schema, where, problems)
    present: dict[str, int] = {}
    for key, raw in body.items():
        if key in HCL2_KEYS or key in meta or key == "dynamic":
            continue
        spec = schema.get(key)
        if spec is None:
            problems.append(f"{where}: unknown argument or block {key!r}")
        elif spec.get("computed") and not (spec.get("optional") or spec.get("required")):
            problems.append(f"{where}: {key!r} is computed by the provider and cannot be set")
        else:
            items = raw if isinstance(raw, list) else [raw]
            check = _check_blocks if _is_block(spec) else _check_argument
            if check(key, items, spec, where, problems):
                present[key] = len(items)

    for key, spec in schema.items():
        if key in dynamic_names:
            continue
        if spec.get("required") and key not in present:
            kind = "block" if _is_block(spec) else "argument"
            problems.append(f"{where}: missing required {kind} {key!r}")
        elif _is_block(spec) and key in present and present[key] < spec.get("minItems", 0):
            problems.append(f"{where}: {present[key]} {key!r} blocks, at least {spec['minItems']} needed")


def _check_dynamic_blocks(
    body: dict[str, Any], schema: dict[str, Any], where: str, problems: list[str]
) -> set[str]:
    names: set[str] = set()
    for dyn in body.get("dynamic", []):
        for name, dyn_body in dyn.items():
            names.add(name)
            spec = schema.get(name)
            if spec is None or not _is_block(spec):
                problems.append(f"{where}: dynamic block {name!r} is not a block of this type")
                continue
            for content in dyn_body.get("content", []):
                _check_body(content, spec["elem"]["schema"], f"{where}.{name}", problems)
    return names


def _check_blocks(key: str, items: list[Any], spec: dict[str, Any], where: str, problems: list[str]) -> bool:
    attribute_mode = spec.get("configMode") in ATTRIBUTE_MODES
    if len(items) == 1 and isinstance(items[0], list):  # `key = [{...}, ...]`
        if not attribute_mode:
            problems.append(f"{where}: {key!r} is a block; write `{key} {{ ... }}`, not `{key} = [...]`")
            return False
        items = items[0]
    if not attribute_mode and _written_as_attribute(items):
        problems.append(f"{where}: {key!r} is a block; write `{key} {{ ... }}`, not `{key} = {{...}}`")
        return False
    for index, item in enumerate(items):
        label = f"{where}.{key}" + (f"[{index}]" if len(items) > 1 else "")
        if isinstance(item, dict):
            if _written_as_attribute([item]):  # `key = [{...}]`, allowed for attribute-mode blocks
                item = {k: v if k in HCL2_KEYS else [v] for k, v in item.items()}  # noqa: PLW2901
            _check_body(item, spec["elem"]["schema"], label, problems)
        elif not _is_expression(item):
            problems.append(f"{label}: expected a block, got {item!r}")
    maximum = spec.get("maxItems")
    if maximum and len(items) > maximum:
        problems.append(f"{where}: {len(items)} {key!r} blocks, at most {maximum} allowed")
    return True


def _check_argument(
    key: str, items: list[Any], spec: dict[str, Any], where: str, problems: list[str]
) -> bool:
    # hcl2 wraps an argument's value in a one-element list.
    if len(items) != 1:
        problems.append(f"{where}: {key!r} is an argument, set it once with `{key} = ...`")
        return False
    value = items[0]
    if spec["type"] == "TypeMap" and isinstance(value, dict) and value and not _written_as_attribute(items):
        problems.append(f"{where}: {key!r} is an argument; write `{key} = {{...}}`, not a block")
        return False
    if problem := _value_problem(value, spec):
        problems.append(f"{where}: {key!r}: {problem} (schema type {spec['type']})")
    return True


# ---------------------------------------------------------------------------------------
# A tree of .tf files
# ---------------------------------------------------------------------------------------


def _documents(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        with path.open(encoding="utf-8") as fh:
            yield path, hcl2.load(fh)


def _other_providers(documents: list[tuple[Path, dict[str, Any]]]) -> dict[Path, set[str]]:
    """Per module directory: local provider names whose source is not azurerm."""
    found: dict[Path, set[str]] = {}
    for path, doc in documents:
        for terraform in doc.get("terraform", []):
            for required in terraform.get("required_providers", []):
                for name, raw in required.items():
                    spec = raw[0] if isinstance(raw, list) and raw else raw
                    source = spec.get("source", "") if isinstance(spec, dict) else ""
                    if source.lower() != AZURERM_SOURCE:
                        found.setdefault(path.parent, set()).add(name)
    return found


def check_tree(root: Path, versions: list[Schema] | None = None) -> Report:  # noqa: PLR0912 - one walk, one branch per block kind
    """Check every .tf file under `root` (each directory is a module) against each schema."""
    versions = versions if versions is not None else schemas()
    documents = list(_documents(root))
    others = _other_providers(documents)
    report = Report()
    for path, doc in documents:
        rel = path.relative_to(root.parent)
        foreign = others.get(path.parent, set())
        blocks: list[tuple[str, str, str, dict[str, Any]]] = []
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        blocks.append((kind, rtype, name, body))
        for kind, rtype, name, body in blocks:
            label = f"{'data.' if kind == 'data' else ''}{rtype}.{name}"
            line = body.get("__start_line__")
            where_base = f"{rel}:{line} {label}" if line else f"{rel} {label}"
            prefix = rtype.split("_", 1)[0]
            if not rtype.startswith("azurerm_"):
                if rtype in BUILTIN_TYPES or prefix in foreign:
                    report.unchecked.append(f"{kind} {rtype}.{name}")
                    continue
                report.problems.append(
                    f"{where_base}: no provider schema for {rtype!r}: declare its "
                    "provider in required_providers or add its schema export"
                )
                continue
            report.checked.append(f"{kind} {rtype}.{name}")
            for schema in versions:
                table = schema.resources if kind == "resource" else schema.data_sources
                entry = table.get(rtype)
                where = f"{where_base} (azurerm {schema.version})"
                if entry is None:
                    what = "resource" if kind == "resource" else "data source"
                    report.problems.append(f"{where}: unknown {what} type")
                    continue
                timeouts = entry.get("timeouts") or {}
                _check_timeouts(body, timeouts, where, report.problems)
                meta = RESOURCE_META if kind == "resource" else DATA_META
                _check_body(body, entry["schema"], where, report.problems, meta=meta | {"timeouts"})
        for entry in doc.get("provider", []):
            for pname, body in entry.items():
                if pname != "azurerm":
                    if pname not in foreign:
                        report.problems.append(
                            f"{rel}: provider {pname!r} has no schema here and is not "
                            "declared in required_providers"
                        )
                    else:
                        report.unchecked.append(f"provider {pname}")
                    continue
                report.checked.append("provider azurerm")
                for schema in versions:
                    where = f"{rel} provider azurerm (azurerm {schema.version})"
                    _check_body(body, schema.provider, where, report.problems, meta=PROVIDER_META)
    return report


def _check_timeouts(body: dict[str, Any], allowed: dict[str, Any], where: str, problems: list[str]) -> None:
    for block in body.get("timeouts", []):
        if not allowed:
            problems.append(f"{where}: this type takes no timeouts block")
            return
        for key in block:
            if key not in allowed and key not in HCL2_KEYS:
                problems.append(f"{where}.timeouts: unknown timeout {key!r} (known: {', '.join(allowed)})")
