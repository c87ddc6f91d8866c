"""The impact of real change reports on the rule fixtures (tests/fixtures/rules/arm/, built
from real tag names and prefixes by tests/fixtures/rules/build.py)."""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.impact import impact
from core.impact_render import section, summary_line, to_html_fragment, to_markdown, to_text
from core.rules import RESOURCE_TYPES, RulesError, RuleSet, parse_rules
from impact.rule_files import read_rules
from servicetags import impact_command
from tests.conftest import SHARED_DATA, real_report, real_snapshot

RULES = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "arm"
LB = "/subscriptions/x/resourceGroups/g/providers/Microsoft.Network/loadBalancers/lb"
FACTS = json.loads((RULES.parent / "facts.json").read_text())


@cache
def fixture_rules() -> RuleSet:
    return read_rules([RULES])


def prefixes_of(cn: int) -> dict[str, frozenset[str]]:
    return {tag.id: tag.prefixes for tag in real_snapshot(cn).tags.values()}


def run(old: int, new: int, region: str = "all", *, mirrors: bool = True) -> dict[str, Any]:
    return impact(
        real_report(old, new, region),
        fixture_rules().rules,
        tag_prefixes=prefixes_of(new) if mirrors else None,
    )


def affected(doc: dict[str, Any], name: str, rule: str) -> dict[str, Any]:
    found = [a for a in doc["affected"] if a["resource_name"] == name and a["rule"] == rule]
    assert len(found) == 1, (
        f"{name} {rule} not affected: {[(a['resource_name'], a['rule']) for a in doc['affected']]}"
    )
    return found[0]


def names(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(a["resource_name"], a["rule"]) for a in doc["affected"]}


def test_the_fixtures_hold_at_least_50_rules_in_every_shape() -> None:
    rules = fixture_rules()
    assert len(rules.rules) >= 50
    assert {r.resource_type for r in rules.rules} | {"Microsoft.Network/firewallPolicies"} >= {
        t for t in RESOURCE_TYPES if not t.endswith(("/securityRules", "/routes"))
    }
    assert rules.firewall_policies == (
        "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg-fw/providers/"
        "Microsoft.Network/firewallPolicies/fwp-hub",
    )


def test_an_nsg_rule_naming_a_changed_regional_tag_gets_its_added_prefixes() -> None:
    doc = run(340, 341, "eastus2")
    for rule in ("securityRules/AllowStorageEastUS2", "securityRules/AllowLowerCaseTag"):
        (finding,) = affected(doc, "nsg-app-westeurope", rule)["findings"]
        assert finding["type"] == "tag" and finding["tag"] == "Storage.EastUS2"
        assert finding["gained"] == ["20.153.40.0/24", "57.150.250.0/23"] == FACTS["eastus2_storage_added"]
        assert finding["lost"] == []
    assert (
        affected(doc, "nsg-app-westeurope", "securityRules/AllowLowerCaseTag")["findings"][0]["written"]
        == "storage.eastus2"
    )
    # The same change seen in the westeurope report touches other rules, not these.
    west = run(340, 341, "westeurope")
    assert ("nsg-app-westeurope", "securityRules/AllowStorageEastUS2") not in names(west)
    (finding,) = affected(west, "nsg-app-westeurope", "securityRules/AllowAzureCloudWestEurope")["findings"]
    assert finding["gained"] == ["132.164.0.0/17", "151.206.92.0/23"]
    # The classic firewall writes the tag in another case.
    assert (
        affected(west, "afw-classic", "networkRuleCollections/net-allow/rules/to-azurecloud-we")["findings"][
            0
        ]["written"]
        == "AzureCloud.WestEurope"
    )


def test_an_ip_group_holding_a_range_a_real_report_removed_is_stale() -> None:
    doc = run(341, 342)
    group = affected(doc, "ipg-frontdoor", "ipAddresses")
    assert group["stale"] is True
    (finding,) = group["findings"]
    assert finding["prefix"] == "150.171.84.0/22" and finding["stale"] is True
    assert finding["removed_from"] == [{"tag": "AzureFrontDoor.FirstParty", "ranges": ["150.171.84.0/22"]}]
    # It moved: the same range joined AzureFrontDoor.Frontend in the same change.
    assert finding["added_to"] == [{"tag": "AzureFrontDoor.Frontend", "ranges": ["150.171.84.0/22"]}]
    # The private range next to it is not mentioned.
    assert "10.30.0.0/16" not in json.dumps(group)


def test_a_storage_network_rule_inside_newly_added_ranges() -> None:
    doc = run(340, 341, "westeurope")
    account = affected(doc, "stappwesteurope", "networkAcls.ipRules")
    (finding,) = account["findings"]
    assert finding["prefix"] == "132.164.10.0/24" and finding["stale"] is False
    assert finding["added_to"] == [{"tag": "AzureCloud.westeurope", "ranges": ["132.164.0.0/17"]}]
    assert account["stale"] is False
    vault = affected(run(340, 341, "eastus2"), "kv-app", "networkAcls.ipRules")
    assert vault["findings"][0]["added_to"] == [
        {"tag": "AzureCloud.eastus2", "ranges": ["20.153.40.0/24"]},
        {"tag": "Storage.EastUS2", "ranges": ["20.153.40.0/24"]},
    ]


def test_a_firewall_rule_referencing_an_ip_group_that_holds_such_a_range() -> None:
    doc = run(341, 342)
    group_id = (
        "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg-fw/providers/"
        "Microsoft.Network/ipGroups/ipg-frontdoor"
    )
    for name, rule, field in (
        ("rcg-network", "ruleCollections/allow-azure/rules/to-frontdoor-group", "destinationAddresses"),
        ("rcg-network", "ruleCollections/allow-web/rules/web-from-frontdoor-group", "sourceAddresses"),
        ("afw-classic", "networkRuleCollections/net-allow/rules/to-frontdoor-group", "destinationAddresses"),
    ):
        record = affected(doc, name, rule)
        (via,) = record["findings"]
        assert (via["type"], via["field"], via["group"], via["stale"]) == ("ip_group", field, group_id, True)
        assert via["findings"][0]["removed_from"][0]["ranges"] == ["150.171.84.0/22"]
        assert record["stale"] is True and "AzureFrontDoor.FirstParty" in record["tags"]
    # The same kind of reference to a group no change touches is not listed.
    assert ("rcg-network", "ruleCollections/allow-azure/rules/to-quiet-group") not in names(doc)
    assert ("rcg-network", "ruleCollections/allow-azure/rules/to-onprem-group") not in names(doc)


def test_literal_lists_copying_a_tag_say_what_to_add_and_remove() -> None:
    doc = run(340, 341)
    (storage,) = affected(doc, "stisraelcopy", "networkAcls.ipRules")["findings"]
    assert storage["type"] == "mirror" and storage["tag"] == "Storage.IsraelCentral"
    # IPv4 only: storage accounts take no IPv6 rule, so no IPv6 range is suggested.
    assert (storage["inside"], storage["of"], storage["add"], storage["remove"]) == (
        7,
        7,
        ["20.153.42.0/24"],
        [],
    )
    assert storage["tag_allowed_here"] is False and "accepts no service tag" in storage["hint"]
    (table,) = affected(doc, "rt-israel-storage", "routes")["findings"]
    assert table["add"] == ["20.153.42.0/24"] and table["tag_allowed_here"] is True
    assert (
        table["hint"]
        == "reference the service tag Storage.IsraelCentral here instead of a copy of its ranges"
    )

    copy = affected(run(341, 342), "ipg-frontdoor-copy", "ipAddresses")
    mirror = next(f for f in copy["findings"] if f["type"] == "mirror")
    assert mirror["tag"] == "AzureFrontDoor.FirstParty"
    assert (mirror["add"], mirror["remove"]) == ([], ["150.171.84.0/22", "150.171.88.0/23"])
    # Without the tags' prefixes, the copies are still found by their stale ranges, but not as copies.
    plain = run(341, 342, mirrors=False)
    assert [f["type"] for f in affected(plain, "ipg-frontdoor-copy", "ipAddresses")["findings"]] == [
        "literal"
    ] * 2
    assert plain["summary"]["mirrors_checked"] is False


def _history() -> list[tuple[int, int]]:
    numbers = sorted(
        int(p.name.split("_cn")[1].split(".")[0])
        for p in SHARED_DATA.glob("ServiceTags_Public_*_cn*.json.gz")
    )
    return list(itertools.pairwise(numbers))


def _plain_expectation(report: dict[str, Any], rules: RuleSet) -> set[tuple[str, str, str]]:
    """(resource id, rule, why) for every tag reference and literal a change touches, found
    the plain way: every literal against every changed range with ipaddress."""
    changed = {t["id"].lower(): t for t in report["tags"] if t["net_added"] or t["net_removed"]}
    # Each changed block as ipaddress gives it, half-open [first, last + 1) like a literal's range:
    # two ranges overlap when each starts before the other ends.
    blocks = [
        (net.version, int(net.network_address), int(net.broadcast_address) + 1)
        for t in changed.values()
        for net in map(ipaddress.ip_network, t["net_added"] + t["net_removed"])
    ]
    out = set()
    for rule in rules.rules:
        for field in rule.fields:
            for tag in field.tags:
                if tag.lower() in changed:
                    out.add((rule.resource_id, rule.rule, f"tag {changed[tag.lower()]['id']}"))
            for literal in field.literals:
                for version, start, end in literal.ranges:
                    if any(v == version and s < end and start < e for v, s, e in blocks):
                        out.add((rule.resource_id, rule.rule, f"literal {literal.text}"))
    return out


def _found(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for record in doc["affected"]:
        for f in record["findings"]:
            if f["type"] == "tag":
                out.add((record["resource_id"], record["rule"], f"tag {f['tag']}"))
            elif f["type"] == "literal":
                out.add((record["resource_id"], record["rule"], f"literal {f['prefix']}"))
    return out


def test_across_the_whole_history_exactly_the_touched_rules_are_found() -> None:
    rules = fixture_rules()
    quiet = set(FACTS["quiet_tags"]) | set(FACTS["quiet_prefixes"])
    never = {
        ("nsg-data", "securityRules/AllowPartnerInbound"),
        ("nsg-data", "securityRules/AllowPrivate"),
        ("nsg-app-westeurope", "securityRules/DenyAll"),
        ("stpartners", "networkAcls.ipRules"),
        ("ipg-onprem", "ipAddresses"),
        ("ipg-partners", "ipAddresses"),
        ("ipg-quiet", "ipAddresses"),
        ("nsg-app-westeurope", "securityRules/AllowQuietTag"),
        ("kv-quiet", "networkAcls.ipRules"),
        ("rcg-network", "ruleCollections/allow-azure/rules/to-quiet-group"),
        ("afw-classic", "networkRuleCollections/net-allow/rules/to-quiet"),
    }
    seen: Counter[str] = Counter()
    pairs = _history()
    assert len(pairs) == 23
    for old, new in pairs:
        report = real_report(old, new)
        doc = impact(report, rules.rules, tag_prefixes=prefixes_of(new))
        assert _found(doc) == _plain_expectation(report, rules), (old, new)
        assert not names(doc) & never, (old, new)
        for record in doc["affected"]:
            seen[record["resource_name"]] += 1
            text = json.dumps(record)
            assert not any(q in text for q in quiet), (old, new, record["rule"])
            for f in record["findings"]:
                if f["type"] == "mirror":  # only when the gap is in what this change moved
                    entry = next(t for t in report["tags"] if t["id"] == f["tag"])
                    moved = [ipaddress.ip_network(p) for p in entry["net_added"] + entry["net_removed"]]
                    gap = [ipaddress.ip_network(p) for p in f["add"] + f["remove"]]
                    assert any(a.version == b.version and a.overlaps(b) for a in gap for b in moved)
        if not report["tags"]:
            assert doc["affected"] == [] and doc["summary"]["rules_affected"] == 0
    # The history reaches most of the fixtures, some many times.
    assert seen["nsg-app-westeurope"] >= 10 and seen["ipg-frontdoor"] >= 1


def test_metadata_only_and_reaggregation_touch_nothing() -> None:
    report = real_report(340, 341, "westeurope")
    tag = report["tags"][0]
    # The same space listed differently: prefixes changed, coverage did not.
    tag.update(
        status="changed",
        added_prefixes=["132.164.0.0/18", "132.164.64.0/18"],
        removed_prefixes=["132.164.0.0/17"],
        net_added=[],
        net_removed=[],
    )
    assert impact(report, fixture_rules().rules)["affected"] == []


def test_renderings() -> None:
    doc = run(341, 342)
    assert summary_line(doc).startswith("all: 13 of 57 rules touched")
    data = section(doc, limit=3)
    assert [item["stale"] for item in data["items"]] == [True, True, True] and data["more"] == 10
    assert "IP Group ipg-frontdoor ipAddresses [stale]" in to_text(doc)
    assert "### IP Group `ipg-frontdoor` `ipAddresses` **stale**" in to_markdown(doc)
    evil = json.loads(json.dumps(doc))
    evil["affected"][0]["resource_name"] = "<script>alert(1)</script>"
    html = to_html_fragment(evil)
    assert "<script>" not in html and "&lt;script&gt;" in html
    quiet = impact(real_report(345, 346), fixture_rules().rules)
    assert summary_line(quiet) == "all: none of 57 rules touched (change 345 → 346)"


# -- bad input: one line naming the file and the resource, exit 2


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = impact_command.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(real_report(341, 342)))
    return path


def test_cli_prints_the_impact(capsys: pytest.CaptureFixture[str], report_file: Path) -> None:
    code, out, err = _cli(capsys, str(report_file), "--rules", str(RULES), "--format", "json", "--exit-code")
    assert (code, err) == (1, "")
    doc = json.loads(out)
    assert doc["summary"]["rules_affected"] == 13 and doc["summary"]["resources_checked"] == 18


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"{not json",
            "nsgs.json: not JSON (Expecting property name enclosed in double quotes at line 1 column 2)",
        ),
        (
            json.dumps(
                [
                    {
                        "id": LB,
                        "type": "Microsoft.Network/loadBalancers",
                    }
                ]
            ).encode(),
            f"nsgs.json: resource {LB}: unknown resource type 'Microsoft.Network/loadBalancers'",
        ),
        (
            json.dumps(
                [
                    {
                        "id": "/subscriptions/x/resourceGroups/g/providers/Microsoft.Network/ipGroups/ipg",
                        "type": "Microsoft.Network/ipGroups",
                        "properties": {"ipAddresses": ["10.0.0.300/24"]},
                    }
                ]
            ).encode(),
            "nsgs.json: resource /subscriptions/x/resourceGroups/g/providers/Microsoft.Network/ipGroups/ipg: "
            "ipAddresses: "
            "'10.0.0.300/24' is not a valid address, range or CIDR prefix",
        ),
        (
            json.dumps(
                {
                    "value": [
                        {
                            "name": "st1",
                            "type": "Microsoft.Storage/storageAccounts",
                            "properties": {"networkAcls": {"ipRules": [{"value": "Storage.WestEurope"}]}},
                        }
                    ]
                }
            ).encode(),
            "nsgs.json: resource st1: networkAcls.ipRules: 'Storage.WestEurope' is not an address, range or "
            "CIDR prefix "
            "(Azure accepts no service tag here)",
        ),
    ],
)
def test_bad_rules_are_one_line_naming_file_and_resource(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, report_file: Path, content: bytes, expected: str
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "nsgs.json").write_bytes(content)
    code, out, err = _cli(capsys, str(report_file), "--rules", str(rules))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"servicetags impact: {rules / 'nsgs.json'}")
    assert expected in err, err


def test_bad_report_and_missing_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, report_file: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "schema": "servicetags.change-report/v1",
                "cloud": "Public",
                "region": "x",
                "from": {"changeNumber": "1"},
                "to": {"changeNumber": "2"},
                "tags": [{"id": "T", "status": "changed", "net_added": ["1.2.3.4/33"], "net_removed": []}],
            }
        )
    )
    code, _, err = _cli(capsys, str(bad), "--rules", str(RULES))
    assert (
        code == 2
        and err.startswith(f"servicetags impact: {bad}: not a change report")
        and err.count("\n") == 1
    )
    code, _, err = _cli(capsys, str(report_file), "--rules", str(tmp_path / "nowhere"))
    assert (code, err) == (2, f"servicetags impact: {tmp_path / 'nowhere'}: no such file or folder\n")


def test_rules_documents_in_every_listing_shape() -> None:
    resource = {
        "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/ipGroups/a",
        "type": "microsoft.network/ipgroups",
        "properties": {"ipAddresses": ["10.0.0.5/24", "10.1.0.1-10.1.0.6"]},
    }
    for doc in (
        [resource],
        {"value": [resource]},
        {"data": [resource], "count": 1, "totalRecords": 1},
        resource,
    ):
        (rule,) = parse_rules([("x.json", doc)]).rules
        assert rule.resource_type == "Microsoft.Network/ipGroups"
        # Host bits dropped as Azure does; a range split into CIDR blocks.
        assert [len(lit.ranges) for lit in rule.fields[0].literals] == [1, 4]  # .1/32 .2/31 .4/31 .6/32
    with pytest.raises(RulesError, match=r"^x.json: not a list of ARM resources"):
        parse_rules([("x.json", {"hello": 1})])


def test_the_azure_cli_flattened_shapes_read_the_same() -> None:
    """`az network nsg list`, `az network route-table list`, `az storage account list` and
    `az network firewall list` put the properties in the object itself."""

    def flatten(value: object) -> object:
        if isinstance(value, list):
            return [flatten(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = {k: flatten(v) for k, v in value.items() if k != "properties"}
        out.update({k: flatten(v) for k, v in (value.get("properties") or {}).items()})
        return out

    docs = []
    for path in sorted(RULES.glob("*.json")):
        doc = json.loads(path.read_text())
        flat = flatten(doc)
        if path.name == "storage-accounts.json":
            for account in flat:  # type: ignore[union-attr]
                acls = account.pop("networkAcls")
                acls["ipRules"] = [
                    {"ipAddressOrRange": r["value"], "action": r["action"]} for r in acls["ipRules"]
                ]
                account["networkRuleSet"] = acls
        docs.append((str(path), flat))
    flat_rules = parse_rules(docs)
    assert [(r.resource_id, r.rule, r.fields) for r in flat_rules.rules] == [
        (r.resource_id, r.rule, r.fields) for r in fixture_rules().rules
    ]


def test_the_rules_the_local_stack_and_the_demo_use_are_the_fixtures():
    """data/rules/ is a copy of the fixtures (the stack must not read tests/): kept in step."""
    bundled = RULES.parents[3] / "data" / "rules"
    assert sorted(p.name for p in bundled.glob("*.json")) == sorted(p.name for p in RULES.glob("*.json"))
    for path in RULES.glob("*.json"):
        assert (bundled / path.name).read_bytes() == path.read_bytes(), path.name
