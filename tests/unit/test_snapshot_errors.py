"""Bad snapshot input: one clear message naming the file and the problem."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from core.errors import SnapshotError
from core.prefixes import PrefixParser
from runtime.snapshot_files import load_snapshot
from tests.conftest import ROOT, snapshot_path

GOOD_TAG = {
    "name": "Storage",
    "id": "Storage",
    "properties": {
        "changeNumber": 3,
        "region": "",
        "systemService": "AzureStorage",
        "addressPrefixes": ["10.0.0.0/24"],
    },
}


def write(tmp_path, name: str, content: bytes | str | dict) -> str:
    path = tmp_path / name
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def doc_with(tag: dict) -> dict:
    return {"changeNumber": 1, "cloud": "Public", "values": [tag]}


BAD_INPUTS = [
    ("empty.json", "", "empty.json: is empty"),
    (
        "truncated.json",
        '{"changeNumber": 1, "values": [{"name": "St',
        "truncated.json: is not valid JSON (line 1, column 41: Unterminated string starting at)",
    ),
    (
        "novalues.json",
        {"changeNumber": 1, "cloud": "Public"},
        "novalues.json: has no 'values' list (not a service-tags file or reply)",
    ),
    ("array.json", "[1, 2]", "array.json: expected a JSON object, found list"),
    (
        "noprops.json",
        doc_with({"name": "Storage", "id": "Storage"}),
        "noprops.json: values[0] (Storage) has no 'properties' object",
    ),
    (
        "badcidr.json",
        doc_with(
            {
                **GOOD_TAG,
                "properties": {**GOOD_TAG["properties"], "addressPrefixes": ["10.0.0.0/24", "10.0.0.300/24"]},
            }
        ),
        "badcidr.json: values[0] (Storage): properties.addressPrefixes[1] '10.0.0.300/24' "
        "is not a valid CIDR prefix",
    ),
    (
        "hostbits.json",
        doc_with({**GOOD_TAG, "properties": {**GOOD_TAG["properties"], "addressPrefixes": ["10.0.0.1/24"]}}),
        "hostbits.json: values[0] (Storage): properties.addressPrefixes[0] '10.0.0.1/24' "
        "is not a valid CIDR prefix (10.0.0.1/24 has host bits set)",
    ),
    (
        "dupes.json",
        {"changeNumber": 1, "values": [GOOD_TAG, GOOD_TAG]},
        "dupes.json: values[1]: duplicate tag id 'Storage'",
    ),
    ("notgzip.json.gz", json.dumps(doc_with(GOOD_TAG)), "notgzip.json.gz: named .gz but is not gzip data"),
    (
        "corrupt.json.gz",
        gzip.compress(b'{"values": []}')[:12],
        "corrupt.json.gz: corrupt or truncated gzip data",
    ),
    (
        "nochange.json",
        {"values": [GOOD_TAG]},
        "nochange.json: top-level changeNumber must be an integer or a string",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_clear_error_naming_the_file(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(path, PrefixParser())
    assert str(caught.value).startswith(str(tmp_path / message.split(":", 1)[0]) + ":")
    assert message.split(": ", 1)[1] in str(caught.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SnapshotError, match=r"nothere\.json: no such file"):
        load_snapshot(tmp_path / "nothere.json")


def test_non_canonical_prefixes_are_normalised(tmp_path):
    path = write(
        tmp_path,
        "upper.json",
        doc_with(
            {
                **GOOD_TAG,
                "properties": {
                    **GOOD_TAG["properties"],
                    "addressPrefixes": ["2603:1000:0::/40", "FE80::/10"],
                },
            }
        ),
    )
    tag = load_snapshot(path).tags["Storage"]
    assert tag.prefixes == frozenset({"2603:1000::/40", "fe80::/10"})
    assert tag.ipv6 == tag.prefixes and tag.ipv4 == frozenset()


def test_api_shape_with_string_change_numbers_loads_like_the_file(tmp_path):
    api = {
        "name": "Public",
        "id": "/subscriptions/x/providers/Microsoft.Network/serviceTags/Public",
        "type": "Microsoft.Network/serviceTags",
        "changeNumber": "1",
        "cloud": "Public",
        "values": [{**GOOD_TAG, "properties": {**GOOD_TAG["properties"], "changeNumber": "3"}}],
    }
    file_shape = doc_with(
        {**GOOD_TAG, "properties": {**GOOD_TAG["properties"], "regionId": 0, "platform": "Azure"}}
    )
    a = load_snapshot(write(tmp_path, "api.json", api))
    b = load_snapshot(write(tmp_path, "file.json.gz", gzip.compress(json.dumps(file_shape).encode())))
    assert a.tags == b.tags
    assert a.change_number == b.change_number == "1"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicetags", "diff", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_error_is_one_line_exit_2_and_no_traceback(tmp_path):
    path = write(tmp_path, "empty.json", "")
    result = run_cli(path, str(snapshot_path(341)))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("servicetags diff: ") and "is empty" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_unknown_region_lists_close_names():
    result = run_cli(str(snapshot_path(340)), str(snapshot_path(341)), "--region", "germanywestcentrl")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "servicetags diff: unknown region 'germanywestcentrl'; "
        "did you mean germanywestcentral, westcentralus, "
        "francecentral?"
    )


def test_cli_bad_argument_is_one_line():
    result = run_cli(str(snapshot_path(340)), str(snapshot_path(341)), "--format", "xml")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--format" in result.stderr


def test_cli_exit_code_flag_reports_change_and_no_change():
    changed = run_cli(
        str(snapshot_path(340)),
        str(snapshot_path(341)),
        "--region",
        "francecentral",
        "--exit-code",
        "--format",
        "text",
    )
    assert changed.returncode == 1
    assert "AzureCloud.centralfrance [changed]" in changed.stdout
    assert "+ 20.95.113.0/24" in changed.stdout
    same = run_cli(str(snapshot_path(345)), str(snapshot_path(346)), "--exit-code")
    assert same.returncode == 0
    assert json.loads(same.stdout)["tags"] == []
    without_flag = run_cli(str(snapshot_path(340)), str(snapshot_path(341)), "--region", "global")
    assert without_flag.returncode == 0
    assert json.loads(without_flag.stdout)["summary"]["tags_changed"] == 55


def test_pure_core_and_diff_command_import_no_azure_sdk():
    code = (
        "import sys, pkgutil, importlib, core, servicetags.diff_command\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('core.' + m.name)\n"
        "banned = {'azure', 'smtplib', 'urllib3', 'requests'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
