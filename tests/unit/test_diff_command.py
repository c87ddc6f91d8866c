"""`servicetags diff` end to end: the forked path gives exactly the serial report, errors
come in file order, and a baseline reuses the tags that did not change."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.canonical import content_sha256
from core.change_report import change_report
from core.errors import ServiceTagsError, SnapshotError
from core.prefixes import PrefixParser
from core.render import to_json
from core.snapshot import baseline_of, snapshot_from_document
from runtime.snapshot_files import read_document
from servicetags.diff_command import compare_files
from tests.conftest import ROOT, real_report, snapshot_path

pytestmark = pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")

STORAGE = {
    "name": "Storage",
    "id": "Storage",
    "properties": {
        "changeNumber": 3,
        "region": "",
        "systemService": "AzureStorage",
        "addressPrefixes": ["10.0.0.0/24", "2603:1000:4::/48"],
    },
}


def write(tmp_path, name: str, values: list[dict], change_number: int = 1) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"changeNumber": change_number, "cloud": "Public", "values": values}))
    return str(path)


def with_prefixes(tag: dict, prefixes: list[str], **props: object) -> dict:
    return {**tag, "properties": {**tag["properties"], "addressPrefixes": prefixes, **props}}


@pytest.mark.parametrize(
    ("old", "new", "region"),
    [
        (360, 361, "all"),  # 165 tags changed, AzureCloud's 12,000 prefixes among them
        (360, 361, "francecentral"),  # one region's tags, hashed from the whole file's digests
        (346, 347, "all"),  # networkFeatures gained (metadata) and merely reordered
        (345, 346, "all"),  # new change number, same content: an empty report
    ],
)
def test_the_forked_comparison_is_the_serial_one(old, new, region):
    parallel = compare_files(str(snapshot_path(old)), str(snapshot_path(new)), region=region, parallel=True)
    serial = compare_files(str(snapshot_path(old)), str(snapshot_path(new)), region=region, parallel=False)
    assert parallel[2] == serial[2] == real_report(old, new, region)
    assert parallel[0].tags == serial[0].tags and parallel[1].tags == serial[1].tags


def test_the_report_hashes_are_those_of_the_selected_tags():
    old, new, report = compare_files(
        str(snapshot_path(340)), str(snapshot_path(341)), region="germanywestcentral", parallel=True
    )
    assert report["from"]["sha256"] == content_sha256(old.select("germanywc"))
    assert report["to"]["sha256"] == content_sha256(new.select("germanywc"))
    assert report["from"]["sha256"] != report["to"]["sha256"]


@pytest.mark.parametrize("parallel", [True, False])
def test_an_invalid_old_file_is_reported_before_an_invalid_new_one(tmp_path, parallel):
    old = write(tmp_path, "old.json", [with_prefixes(STORAGE, ["10.0.0.0/24", "10.0.0.256/32"])])
    new = write(tmp_path, "new.json", [with_prefixes(STORAGE, ["10.0.0.0/33"])])
    with pytest.raises(ServiceTagsError) as caught:
        compare_files(old, new, parallel=parallel)
    assert str(caught.value).startswith(
        f"{old}: values[0] (Storage): properties.addressPrefixes[1] "
        "'10.0.0.256/32' is not a valid CIDR prefix"
    )


@pytest.mark.parametrize("parallel", [True, False])
def test_a_new_prefix_is_checked_though_its_tag_was_known(tmp_path, parallel):
    old = write(tmp_path, "old.json", [STORAGE])
    new = write(
        tmp_path,
        "new.json",
        [with_prefixes(STORAGE, [*STORAGE["properties"]["addressPrefixes"], "10.0.1.0/23"])],
    )
    with pytest.raises(
        ServiceTagsError,
        match=r"new\.json: values\[0\] \(Storage\): properties\."
        r"addressPrefixes\[2\] '10\.0\.1\.0/23' .*host bits set",
    ):
        compare_files(old, new, parallel=parallel)


def test_prefixes_not_in_normalised_form_compare_as_their_normal_form(tmp_path):
    # The fork path diffs raw text, finds out from the child that the old file needed
    # normalising, and redoes the comparison: the result must be the serial one.
    old = write(tmp_path, "old.json", [with_prefixes(STORAGE, ["10.0.0.0/24", "2603:1000:0004:0::/48"])])
    new = write(
        tmp_path,
        "new.json",
        [with_prefixes(STORAGE, ["10.0.0.0/24", "2603:1000:4::/48", "10.9.0.0/16"])],
        change_number=2,
    )
    _, _, parallel = compare_files(old, new, parallel=True)
    _, _, serial = compare_files(old, new, parallel=False)
    assert parallel == serial
    [entry] = parallel["tags"]
    assert entry["added_prefixes"] == ["10.9.0.0/16"] and entry["removed_prefixes"] == []
    assert parallel["summary"]["ipv4_addresses_added"] == 65536


def test_unchanged_tags_are_the_baseline_objects_and_changed_ones_are_new():
    parser = PrefixParser()
    old_doc = read_document(snapshot_path(360))
    old = snapshot_from_document(old_doc, "old", parser)
    new = snapshot_from_document(
        read_document(snapshot_path(361)), "new", parser, baseline=baseline_of(old_doc, old)
    )
    same = [t for t in new.tags if new.tags[t] is old.tags.get(t)]
    differing = [t for t in new.tags if new.tags[t] != old.tags.get(t)]
    assert len(same) == len(new.tags) - len(differing) == 2803
    assert "AzureCloud" in differing and new.tags["AzureCloud"] is not old.tags["AzureCloud"]
    assert change_report(old, new, parser=parser) == real_report(360, 361)


def test_a_tag_whose_lists_were_only_reordered_is_the_baseline_object():
    prefixes = STORAGE["properties"]["addressPrefixes"]
    old_doc = {
        "changeNumber": 1,
        "values": [with_prefixes(STORAGE, prefixes, networkFeatures=["API", "NSG", "UDR"])],
    }
    new_doc = {
        "changeNumber": 2,
        "values": [with_prefixes(STORAGE, prefixes[::-1], networkFeatures=["UDR", "API", "NSG"])],
    }
    parser = PrefixParser()
    old = snapshot_from_document(old_doc, "a", parser)
    new = snapshot_from_document(new_doc, "b", parser, baseline=baseline_of(old_doc, old))
    assert new.tags["Storage"] is old.tags["Storage"]


def test_a_tag_id_that_is_not_a_string_is_a_clear_error_with_a_baseline():
    parser = PrefixParser()
    old_doc = {"changeNumber": 1, "values": [STORAGE]}
    old = snapshot_from_document(old_doc, "a", parser)
    with pytest.raises(SnapshotError, match=r"^b: values\[0\] has no 'id' or 'name'$"):
        snapshot_from_document(
            {"changeNumber": 2, "values": [{**STORAGE, "id": ["Storage"], "name": 7}]},
            "b",
            parser,
            baseline=baseline_of(old_doc, old),
        )


def test_the_console_command_prints_the_whole_report_before_it_exits():
    # The command ends with os._exit after writing: nothing may be lost to buffering.
    result = subprocess.run(
        [sys.executable, "-m", "servicetags", "diff", str(snapshot_path(360)), str(snapshot_path(361))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == to_json(real_report(360, 361))
    assert json.loads(result.stdout)["summary"]["tags_changed"] == 162
