"""The change report schema: real reports validate; broken ones fail with the JSON path named."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import pytest

from core.errors import ServiceTagsError
from runtime.report_schema import SCHEMA_PATH, ReportSchemaError, report_schema, validate_report
from tests.conftest import real_report as report


def index_of(rep: dict, status: str) -> int:
    return next(i for i, t in enumerate(rep["tags"]) if t["status"] == status)


@pytest.mark.parametrize(
    ("old", "new", "region"),
    [
        (340, 341, "all"),  # 88 changed tags, IPv6 counts beyond 64 bits
        (344, 345, "all"),  # added tags
        (360, 361, "all"),  # removed tags
        (346, 347, "all"),  # metadata-only tags
        (347, 360, "francecentral"),
        (340, 341, "global"),
        (340, 341, "germanywestcentral"),
    ],
)
def test_real_reports_validate(old, new, region):
    rep = report(old, new, region)
    assert validate_report(rep) is rep


def test_every_status_is_covered_by_the_real_reports_above():
    statuses = {t["status"] for pair in ((344, 345), (360, 361), (346, 347)) for t in report(*pair)["tags"]}
    assert statuses == {"added", "removed", "changed", "metadata"}


def test_a_report_survives_a_json_round_trip_and_still_validates():
    validate_report(json.loads(json.dumps(report(346, 347))))


def test_schema_file_is_draft_2020_12_and_names_the_contract_version():
    schema = report_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema"] == {"const": "servicetags.change-report/v1"}
    assert SCHEMA_PATH.name == "change-report.v1.json"


def _set(path: str, value: object) -> Callable[[dict], None]:
    *parents, last = path.split(".")

    def mutate(rep: dict) -> None:
        node: object = rep
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]

    return mutate


def _del(path: str) -> Callable[[dict], None]:
    *parents, last = path.split(".")

    def mutate(rep: dict) -> None:
        node: object = rep
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        del node[last]  # type: ignore[union-attr]

    return mutate


BROKEN = [
    ("missing summary", _del("summary"), "$", "'summary' is a required property"),
    ("wrong schema id", _set("schema", "servicetags.change-report/v2"), "$.schema", "was expected"),
    ("unknown top-level key", _set("extra", 1), "$", "'extra' was unexpected"),
    ("region with spaces", _set("region", "France Central"), "$.region", "ARM location name"),
    ("short sha256", _set("from.sha256", "abc123"), "$.from.sha256", "64 lowercase hex digits"),
    ("integer change number", _set("to.changeNumber", 341), "$.to.changeNumber", "not of type 'string'"),
    ("negative count", _set("summary.prefixes_added", -1), "$.summary.prefixes_added", "minimum of 0"),
    (
        "string count",
        _set("summary.ipv4_addresses_added", "12"),
        "$.summary.ipv4_addresses_added",
        "not of type 'integer'",
    ),
    ("unknown summary key", _set("summary.tags_renamed", 0), "$.summary", "'tags_renamed' was unexpected"),
    ("tags not a list", _set("tags", {}), "$.tags", "not of type 'array'"),
    ("unknown status", _set("tags.3.status", "bogus"), "$.tags[3].status", "is not one of"),
    ("missing tag id", _del("tags.0.id"), "$.tags[0]", "'id' is a required property"),
    (
        "bad prefix",
        _set("tags.0.added_prefixes.0", "10.0.0.0/33"),
        "$.tags[0].added_prefixes[0]",
        "CIDR notation",
    ),
    ("not a prefix at all", _set("tags.1.net_added", ["japaneast"]), "$.tags[1].net_added[0]", "CIDR"),
    (
        "metadata change without 'to'",
        _set("tags.0.metadata_changes", {"networkFeatures": {"from": []}}),
        "$.tags[0].metadata_changes.networkFeatures",
        "'to' is a required property",
    ),
    (
        "change_number not an object",
        _set("tags.2.change_number", "12"),
        "$.tags[2].change_number",
        "not of type 'object'",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "problem"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_report_fails_with_one_line_naming_the_path(mutate, path, problem):
    rep = report(340, 341)
    mutate(rep)
    with pytest.raises(ReportSchemaError) as caught:
        validate_report(rep)
    message = str(caught.value)
    assert caught.value.path == path
    assert problem in message
    assert message.startswith(f"change report invalid at {path}: ")
    assert "\n" not in message and len(message) < 300
    assert isinstance(caught.value, ServiceTagsError)


def test_status_rules_an_added_tag_cannot_lose_prefixes():
    rep = report(344, 345)
    i = index_of(rep, "added")
    rep["tags"][i]["removed_prefixes"] = ["10.0.0.0/8"]
    with pytest.raises(ReportSchemaError, match=rf"\$\.tags\[{i}\]\.removed_prefixes: .* is not empty"):
        validate_report(rep)


def test_status_rules_a_removed_tag_has_no_new_change_number():
    rep = report(360, 361)
    i = index_of(rep, "removed")
    rep["tags"][i]["change_number"]["to"] = "5"
    with pytest.raises(ReportSchemaError, match=rf"\$\.tags\[{i}\]\.change_number\.to: '5' is not of type"):
        validate_report(rep)


def test_status_rules_a_metadata_change_lists_no_prefixes():
    rep = report(346, 347)
    i = index_of(rep, "metadata")
    rep["tags"][i]["net_added"] = ["10.0.0.0/24"]
    with pytest.raises(ReportSchemaError, match=rf"\$\.tags\[{i}\]\.net_added"):
        validate_report(rep)


@pytest.mark.parametrize("doc", [None, [], "report", 42])
def test_non_object_documents_fail_at_the_root(doc):
    with pytest.raises(ReportSchemaError) as caught:
        validate_report(doc)
    assert caught.value.path == "$"


def test_a_huge_offending_value_is_shortened_not_dumped():
    rep = report(340, 341)
    rep["tags"] = {"t": copy.deepcopy(rep["tags"])}
    with pytest.raises(ReportSchemaError) as caught:
        validate_report(rep)
    assert len(str(caught.value)) < 300


def test_region_event_is_an_optional_compatible_field():
    import pytest

    from core.report import with_region_event
    from runtime.report_schema import ReportSchemaError, validate_report
    from tests.conftest import real_report

    ordinary = real_report(346, 347, "francecentral")
    assert "region_event" not in ordinary and validate_report(ordinary) is ordinary
    new = with_region_event(real_report(346, 347, "indonesiacentral"), "added")
    assert validate_report(new) is new
    wrong = {**ordinary, "region_event": "added"}  # changed tags under a new-region mark
    with pytest.raises(ReportSchemaError, match=r"\$\.tags\[\d+\]\.status: 'added' was expected"):
        validate_report(wrong)
    with pytest.raises(ReportSchemaError, match="region_event"):
        validate_report({**new, "region_event": "moved"})
    with pytest.raises(ValueError, match="lists only added tags"):
        with_region_event(ordinary, "added")
