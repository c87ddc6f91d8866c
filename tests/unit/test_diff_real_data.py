"""The diff engine on Microsoft's real weekly files: concrete, known results."""

from __future__ import annotations

from functools import cache

import pytest

from core.change_report import change_report
from core.errors import UnknownRegionError
from core.model import Snapshot
from core.prefixes import PrefixParser
from runtime.snapshot_files import load_snapshot
from tests.conftest import snapshot_path

PARSER = PrefixParser()


@cache
def snap(cn: int) -> Snapshot:
    return load_snapshot(snapshot_path(cn), PARSER)


def report(old: int, new: int, region: str = "all") -> dict:
    return change_report(snap(old), snap(new), region=region, parser=PARSER)


def tag(rep: dict, tag_id: str) -> dict:
    return next(t for t in rep["tags"] if t["id"] == tag_id)


def test_whole_cloud_counts_per_status_cn340_to_cn341():
    rep = report(340, 341)
    assert rep["summary"] == {
        "tags_added": 0,
        "tags_removed": 0,
        "tags_changed": 88,
        "tags_metadata_only": 0,
        "prefixes_added": 445,
        "prefixes_removed": 69,
        "ipv4_addresses_added": 365685,
        "ipv4_addresses_removed": 8,
        "ipv6_addresses_added": 6046898047594212148384024,
        "ipv6_addresses_removed": 0,
    }
    assert rep["from"]["changeNumber"] == "340" and rep["to"]["changeNumber"] == "341"
    assert rep["region"] == "all" and rep["cloud"] == "Public"
    assert rep["schema"] == "servicetags.change-report/v1"


def test_specific_prefixes_added_to_a_global_tag():
    action_group = tag(report(340, 341), "ActionGroup")
    assert action_group["status"] == "changed"
    assert action_group["added_prefixes"] == ["74.7.216.24/30", "2603:1030:1502:400::40/125"]
    assert action_group["removed_prefixes"] == []
    assert action_group["change_number"] == {"from": "46", "to": "47"}
    assert action_group["region"] == ""


def test_region_whose_data_code_differs_from_its_arm_name():
    rep = report(340, 341, "germanywestcentral")
    assert rep["region"] == "germanywestcentral"
    assert [t["id"] for t in rep["tags"]] == ["AzureCloud.germanywc"]
    azure_cloud = rep["tags"][0]
    assert azure_cloud["region"] == "germanywc"
    assert azure_cloud["added_prefixes"] == ["131.189.0.0/17", "151.206.96.0/23"]
    assert rep["summary"]["ipv4_addresses_added"] == 32768 + 512


def test_arm_name_and_data_code_select_the_same_tags():
    by_name = report(340, 341, "francecentral")
    by_code = report(340, 341, "centralfrance")
    assert by_name == by_code
    assert by_name["region"] == "francecentral"
    assert tag(by_name, "AzureCloud.centralfrance")["added_prefixes"] == ["20.95.113.0/24", "151.206.94.0/23"]


def test_global_is_every_region_less_tag_and_nothing_else():
    rep = report(340, 341, "global")
    assert rep["summary"]["tags_changed"] == 55
    assert rep["summary"]["ipv4_addresses_added"] == 188219
    assert all(t["region"] == "" for t in rep["tags"])
    assert "AzureCloud.germanywc" not in {t["id"] for t in rep["tags"]}
    assert len(snap(341).select("").tags) == sum(1 for t in snap(341).tags.values() if not t.region)


def test_same_content_under_a_new_change_number_is_an_empty_report():
    rep = report(345, 346)
    assert rep["tags"] == []
    assert rep["summary"]["tags_changed"] == 0
    assert rep["from"]["changeNumber"] == "345" and rep["to"]["changeNumber"] == "346"
    assert rep["from"]["sha256"] == rep["to"]["sha256"]


def test_tags_added_between_files():
    rep = report(344, 345)
    assert rep["summary"]["tags_added"] == 59
    powerbi = tag(rep, "PowerBI.AustraliaCentral")
    assert powerbi["status"] == "added"
    assert powerbi["change_number"]["from"] is None
    assert powerbi["removed_prefixes"] == []
    assert len(powerbi["added_prefixes"]) == len(snap(345).tags["PowerBI.AustraliaCentral"].prefixes)


def test_tags_removed_between_files():
    rep = report(360, 361)
    removed = sorted(t["id"] for t in rep["tags"] if t["status"] == "removed")
    assert removed == [
        "AzureUpdateDelivery.NorthCentralUS",
        "AzureUpdateDelivery.WestUS",
        "AzureUpdateDelivery.WestUS3",
    ]
    gone = tag(rep, "AzureUpdateDelivery.WestUS")
    assert gone["added_prefixes"] == []
    assert gone["net_removed"]  # its address space is no longer covered by that tag


def test_metadata_only_changes_are_real_feature_changes_not_reorderings():
    rep = report(346, 347)
    assert rep["summary"]["tags_metadata_only"] == 42
    infra = tag(rep, "PowerPlatformInfra.FranceCentral")
    assert infra["status"] == "metadata"
    assert infra["change_number"] == {"from": "5", "to": "5"}
    assert infra["metadata_changes"] == {
        "networkFeatures": {"from": ["API", "FW", "NSG"], "to": ["API", "FW", "NSG", "UDR"]}
    }
    # DataFactory.CentralUSEUAP only reordered its features: not a change.
    assert "DataFactory.CentralUSEUAP" not in {t["id"] for t in rep["tags"]}


def test_reaggregation_changes_prefixes_but_not_coverage():
    centralfrance = tag(report(360, 361, "francecentral"), "AzureCloud.centralfrance")
    assert centralfrance["removed_prefixes"][:3] == ["57.157.36.32/29", "57.157.36.40/30", "57.157.36.44/31"]
    assert centralfrance["net_removed"] == []
    assert centralfrance["net_added"][:3] == ["57.157.36.46/31", "57.157.36.48/29", "57.157.36.56/30"]


def test_widened_prefix_reports_only_the_new_half_as_net():
    brazil = tag(report(346, 347, "brazilsouth"), "AzureCloud.brazilsouth")
    assert "20.95.240.0/24" in brazil["removed_prefixes"]
    assert "20.95.240.0/23" in brazil["added_prefixes"]
    assert "20.95.241.0/24" in brazil["net_added"]
    assert "20.95.240.0/24" not in brazil["net_removed"]


def test_coverage_counts_for_a_region():
    rep = report(346, 347, "francecentral")
    assert rep["summary"]["tags_changed"] == 2
    assert rep["summary"]["tags_metadata_only"] == 1
    assert rep["summary"]["ipv4_addresses_added"] == 16672
    assert rep["summary"]["ipv4_addresses_removed"] == 6
    wvd = tag(rep, "WindowsVirtualDesktop.FranceCentral")
    assert wvd["added_prefixes"] == []
    assert wvd["net_removed"][:2] == ["20.111.42.147/32", "20.188.39.108/32"]


def test_unknown_region_names_the_closest_known_ones():
    with pytest.raises(UnknownRegionError, match="did you mean francecentral"):
        report(340, 341, "francecentrl")


def test_content_hash_ignores_only_the_top_level_change_number():
    a, b = report(345, 346), report(340, 341)
    assert a["to"]["sha256"] == a["from"]["sha256"]
    assert b["to"]["sha256"] != b["from"]["sha256"]
