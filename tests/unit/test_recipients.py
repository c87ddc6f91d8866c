"""Recipients: parsing SERVICETAGS_RECIPIENTS and restricting real reports to what each asked for."""

from __future__ import annotations

import json

import pytest

from core.errors import ServiceTagsError
from core.report import address_counts, summarise
from notifier.recipients import (
    Recipient,
    RecipientsError,
    filter_report,
    parse_recipients,
)
from runtime.report_schema import validate_report
from tests.conftest import real_report as report


def one(entry: dict) -> Recipient:
    return parse_recipients(json.dumps([entry]))[0]


# -- parsing --------------------------------------------------------------------------------


def test_json_list_with_names_regions_and_tag_patterns():
    recipients = parse_recipients(
        json.dumps(
            [
                {"address": "net@example.com", "name": "Network team"},
                {
                    "address": "app@example.com",
                    "regions": ["JapanEast", "global"],
                    "tags": ["Storage*", "AzureCloud.japaneast"],
                },
            ]
        )
    )
    assert recipients == [
        Recipient("net@example.com", "Network team"),
        Recipient(
            "app@example.com", "", frozenset({"japaneast", "global"}), ("storage*", "azurecloud.japaneast")
        ),
    ]


def test_comma_separated_addresses_mean_everything_for_each():
    assert parse_recipients(" net@example.com, ops@example.org ") == [
        Recipient("net@example.com"),
        Recipient("ops@example.org"),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no recipients given"),
        ("[]", "no recipients given"),
        ("[{", "not valid JSON"),
        ('{"address": "a@example.com"}', "expected a JSON list of recipients, got dict"),
        ('["a@example.com"]', "entry 1: expected an object with an 'address', got str"),
        ('[{"name": "x"}]', "entry 1: missing 'address'"),
        ('[{"address": 5}]', "entry 1: 'address' must be a non-empty string"),
        ('[{"address": "Net <net@example.com>"}]', "is not a plain e-mail address"),
        ('[{"address": "net.example.com"}]', "'net.example.com' is not a plain e-mail address"),
        (
            '[{"address": "a@example.com"}, {"address": "b@example.com", "region": ["x"]}]',
            "entry 2 (b@example.com): unknown key 'region' (allowed: address, name, regions, tags, services, "
            "delivery, min_addresses, family)",
        ),
        (
            '[{"address": "a@example.com", "regions": "japaneast"}]',
            "'regions' must be a list of non-empty strings",
        ),
        ('[{"address": "a@example.com", "tags": [1]}]', "'tags' must be a list of non-empty strings"),
        ('[{"address": "a@example.com", "tags": []}]', "'tags' is empty"),
        ('[{"address": "a@example.com", "name": ["x"]}]', "'name' must be a one-line string"),
        ('[{"address": "a@example.com", "name": "x\\r\\nBcc: evil@example.com"}]', "one-line string"),
        ("a@example.com, A@example.com", "listed twice"),
        ("a@example.com, not an address", "entry 2: 'not an address' is not a plain e-mail address"),
    ],
)
def test_invalid_settings_fail_with_the_entry_and_the_problem(text, problem):
    with pytest.raises(RecipientsError) as caught:
        parse_recipients(text)
    assert problem in str(caught.value)
    assert str(caught.value).startswith("SERVICETAGS_RECIPIENTS: ")
    assert isinstance(caught.value, ServiceTagsError)


# -- filtering ------------------------------------------------------------------------------


def test_recipient_without_filters_gets_the_report_unchanged():
    rep = report(340, 341)
    assert filter_report(rep, Recipient("net@example.com")) is rep


def test_region_filter_matches_the_report_region():
    rep = report(347, 360, "francecentral")
    assert filter_report(rep, one({"address": "a@example.com", "regions": ["FranceCentral"]})) is rep
    assert filter_report(rep, one({"address": "a@example.com", "regions": ["japaneast", "global"]})) is None


def test_a_whole_cloud_report_reaches_a_region_filtered_recipient_only_if_it_lists_all():
    rep = report(340, 341, "all")
    assert filter_report(rep, one({"address": "a@example.com", "regions": ["japaneast"]})) is None
    assert filter_report(rep, one({"address": "a@example.com", "regions": ["all"]})) is rep


def test_non_matching_tag_patterns_get_nothing():
    rep = report(347, 360, "francecentral")
    recipient = one({"address": "a@example.com", "tags": ["Sql*", "AzureCloud.japaneast"]})
    assert filter_report(rep, recipient) is None


def test_tag_patterns_match_ids_case_insensitively():
    rep = report(347, 360, "francecentral")
    recipient = one({"address": "a@example.com", "tags": ["storage*", "LOGICAPPS.francecentral"]})
    kept = filter_report(rep, recipient)
    assert [t["id"] for t in kept["tags"]] == ["LogicApps.FranceCentral", "Storage.FranceCentral"]
    assert kept["summary"] == {
        "tags_added": 0,
        "tags_removed": 0,
        "tags_changed": 2,
        "tags_metadata_only": 0,
        "prefixes_added": 1,
        "prefixes_removed": 12,
        "ipv4_addresses_added": 512,
        "ipv4_addresses_removed": 12,
        "ipv6_addresses_added": 0,
        "ipv6_addresses_removed": 0,
    }
    assert rep["summary"]["tags_changed"] == 4  # the stored report is not touched


def test_tag_patterns_also_match_the_system_service():
    rep = report(347, 360, "francecentral")
    kept = filter_report(rep, one({"address": "a@example.com", "tags": ["AzureApiManagement"]}))
    assert [t["id"] for t in kept["tags"]] == ["ApiManagement.FranceCentral"]
    assert kept["summary"]["ipv4_addresses_added"] == 2  # 48.220.16.2/31


def test_azurecloud_pattern_on_the_whole_cloud_cn340_to_cn341_recomputes_the_summary():
    rep = report(340, 341, "all")
    kept = filter_report(rep, one({"address": "a@example.com", "tags": ["AzureCloud.*"]}))
    assert len(kept["tags"]) == 30
    assert all(t["id"].startswith("AzureCloud.") for t in kept["tags"])
    assert "AzureCloud" not in {t["id"] for t in kept["tags"]}  # the global tag has no dot
    assert kept["summary"] == {
        "tags_added": 0,
        "tags_removed": 0,
        "tags_changed": 30,
        "tags_metadata_only": 0,
        "prefixes_added": 55,
        "prefixes_removed": 17,
        "ipv4_addresses_added": 175674,
        "ipv4_addresses_removed": 0,
        "ipv6_addresses_added": 202914184810805067776,
        "ipv6_addresses_removed": 0,
    }
    assert {k: kept[k] for k in ("schema", "cloud", "region", "from", "to")} == {
        k: rep[k] for k in ("schema", "cloud", "region", "from", "to")
    }
    validate_report(kept)


def test_filtered_japaneast_report_for_a_team_that_wants_azurecloud_japaneast():
    rep = report(340, 341, "japaneast")
    recipient = one(
        {
            "address": "app@example.com",
            "regions": ["japaneast", "global"],
            "tags": ["Storage*", "AzureCloud.japaneast"],
        }
    )
    kept = filter_report(rep, recipient)
    assert [t["id"] for t in kept["tags"]] == ["AzureCloud.japaneast"]
    assert kept["summary"]["prefixes_added"] == 2 and kept["summary"]["ipv4_addresses_added"] == 8


@pytest.mark.parametrize(
    ("old", "new", "region"),
    [(340, 341, "all"), (344, 345, "all"), (360, 361, "all"), (346, 347, "all"), (347, 360, "francecentral")],
)
def test_recomputed_summary_of_all_tags_equals_the_diff_engines(old, new, region):
    # Two independent computations (ipaddress here, interval arithmetic in the diff engine).
    rep = report(old, new, region)
    assert summarise(rep["tags"]) == rep["summary"]


def test_address_counts_split_by_family():
    assert address_counts(["10.0.0.0/24", "10.0.1.0/31", "2603:1000::/64"]) == (258, 2**64)
    assert address_counts([]) == (0, 0)
