"""Hostile input found by an adversarial run (issue 16): each case is one clear error of the
documented kind (exit 2 and one line for the CLI, BadMessage for a message), on one core as on
two, never a traceback, and memory stays bounded."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import BadMessage, ServiceTagsError, SnapshotError
from core.json_input import JsonInputError, load_json
from core.messages import parse_region_message
from core.ports import Message
from core.prefixes import PrefixParser, normalise
from core.regions import index_from_names
from core.snapshot import decompress
from runtime import logs
from runtime.poison_queues import message_region, poisoned
from runtime.snapshot_files import read_bytes
from servicetags import forked
from servicetags.diff_command import compare_files
from servicetags.ops_command import _print_status, _region_row
from tests.conftest import ROOT, snapshot_path

pytestmark = pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")

TAGS = [
    {
        "name": "Storage",
        "id": "Storage",
        "properties": {
            "changeNumber": 3,
            "region": "",
            "systemService": "AzureStorage",
            "addressPrefixes": ["10.0.0.0/24", "2603:1000:4::/48"],
        },
    },
    {
        "name": "AzureCloud.westeurope",
        "id": "AzureCloud.westeurope",
        "properties": {
            "changeNumber": 7,
            "region": "westeurope",
            "systemService": "",
            "addressPrefixes": ["20.50.0.0/18", "2603:1020:206::/48"],
        },
    },
]


def document(values: list[dict] | None = None) -> dict:
    return {"changeNumber": 1, "cloud": "Public", "values": values if values is not None else TAGS}


def tweak(change):
    values = json.loads(json.dumps(TAGS))
    change(values[1])
    return values


def add_prefix(prefix):
    return lambda tag: tag["properties"]["addressPrefixes"].append(prefix)


# Each bad OLD file as text (json.dumps cannot write all of them), and what the error names.
BAD_FILES = {
    "invalid prefix": (json.dumps(document(tweak(add_prefix("10.0.0.1/8x")))), "is not a valid CIDR prefix"),
    "number prefix": (json.dumps(document(tweak(add_prefix(5)))), "5 is not a string"),
    "NaN prefix": (json.dumps(document(tweak(add_prefix(float("nan"))))), "NaN is not a JSON value"),
    "surrogate id": (
        json.dumps(document(tweak(lambda t: t.update(id="AzureCloud.\ud800")))),
        "lone UTF-16 surrogate (not Unicode text) at $.values[1].id",
    ),
    "zone prefix": (json.dumps(document(tweak(add_prefix("fe80::%eth0/64")))), "names an IPv6 zone"),
    "dict name": (json.dumps(document(tweak(lambda t: t.update(name={"a": 1})))), "'name' must be a string"),
    "int name": (json.dumps(document(tweak(lambda t: t.update(name=7)))), "'name' must be a string"),
    "5000 digits": (json.dumps(document())[:-1] + ', "x": ' + "9" * 5000 + "}", "4300 digits"),
    "100k nesting": ("[" * 100_000 + "]" * 100_000, "nests arrays or objects too deeply"),
}


@pytest.fixture
def good(tmp_path: Path) -> str:
    path = tmp_path / "good.json"
    path.write_text(json.dumps(document()))
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("region", ["all", "westeurope"])
def test_a_bad_old_file_is_the_same_error_on_one_core_and_on_two(tmp_path, good, case, region):
    text, problem = BAD_FILES[case]
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    errors = []
    for parallel in (False, True):
        with pytest.raises(ServiceTagsError) as caught:
            compare_files(str(bad), good, region=region, parallel=parallel)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"{bad}: ") and problem in errors[0]
    # As the NEW file too.
    with pytest.raises(SnapshotError, match="^" + str(bad).replace(".", r"\.")):
        compare_files(good, str(bad), region=region, parallel=True)


def run_diff(
    *args: str,
    cores: str | None = None,
    stdout=subprocess.PIPE,
    close_stdout: bool = False,
    env: dict[str, str] | None = None,
):
    command = [sys.executable, "-m", "servicetags.cli", "diff", *args]
    if cores is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cores, *command]
    if close_stdout:
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    return subprocess.run(
        command,
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("case", ["invalid prefix", "NaN prefix", "surrogate id", "number prefix"])
def test_the_command_exits_2_with_one_line_on_one_and_two_cores(tmp_path, good, case):
    bad = tmp_path / "bad.json"
    bad.write_text(BAD_FILES[case][0])
    one = one_line_error(run_diff("--exit-code", str(bad), good, cores="0"))
    two = one_line_error(run_diff("--exit-code", str(bad), good, cores="0,1"))
    assert one == two and "Bad file descriptor" not in two


def test_a_child_that_fails_unexpectedly_is_retried_here_and_the_pipe_closed_once():
    calls = []

    def broken() -> int:
        calls.append(os.getpid())
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    pending = forked.Pending(broken)
    with pytest.raises(UnicodeEncodeError):
        pending.result()
    pending.close()  # before the fix: OSError [Errno 9] Bad file descriptor
    assert calls == [os.getpid()]  # the child's own call is not in this process's list


def test_output_to_a_full_device_or_a_closed_stdout_is_one_line(good):
    with open("/dev/full", "w") as full:
        assert "No space left on device" in one_line_error(run_diff(good, good, stdout=full))
    closed = run_diff(good, good, stdout=None, close_stdout=True)
    assert "standard output is closed" in one_line_error(closed)


def test_reading_is_bounded_for_endless_files_and_gzip_bombs(tmp_path, good):
    limit = {"SERVICETAGS_MAX_SNAPSHOT_BYTES": "200000"}
    assert "over the 200,000-byte limit" in one_line_error(run_diff(good, "/dev/zero", env=limit))
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b" " * 5_000_000))  # 5 KB on disk
    refused = one_line_error(run_diff(str(bomb), good, env=limit))
    assert "bomb.json.gz: is over the 200,000-byte limit" in refused
    assert "is not a whole number" in one_line_error(
        run_diff(good, good, env={"SERVICETAGS_MAX_SNAPSHOT_BYTES": "lots"})
    )


def test_the_bounded_gunzip_reads_every_member_and_refuses_garbage():
    data = json.dumps(document()).encode()
    two_members = gzip.compress(data[:50]) + gzip.compress(data[50:])
    assert decompress(two_members, "x") == data
    assert decompress(gzip.compress(data) + b"\0\0", "x") == data
    with pytest.raises(SnapshotError, match="trailing garbage"):
        decompress(gzip.compress(data) + b"junk", "x")
    with pytest.raises(SnapshotError, match="truncated"):
        decompress(gzip.compress(data)[:-12], "x")
    with pytest.raises(SnapshotError, match="over the 100-byte limit"):
        decompress(gzip.compress(data), "x", limit=100)


def test_the_real_files_are_well_inside_the_default_limit():
    # The default must sit far above real data: the largest real file, decompressed.
    assert len(read_bytes(snapshot_path(361))) < 8 * 1024 * 1024


def test_json_input_errors_are_one_kind():
    for text, problem in [
        ("[" * 5000, "too deeply"),
        ("1" * 5000, "4300 digits"),
        ("NaN", "NaN"),
        ('{"a": -Infinity}', "-Infinity"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"\\udc00": 1}', "$ (a key)"),
        ('["ok", "\\ud83d"]', "$[1]"),
        ("{", "line 1"),
    ]:
        with pytest.raises(JsonInputError) as caught:
            load_json(text)
        assert problem in str(caught.value)
    # A surrogate pair is one character, and an escaped backslash before "ud800" is no escape.
    assert load_json('["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]
    assert load_json(b"\xef\xbb\xbf{}") == {}


def test_a_zone_index_prefix_is_invalid_not_an_assertion():
    with pytest.raises(ValueError, match="IPv6 zone"):
        normalise("fe80::%eth0/64")
    parser = PrefixParser()
    with pytest.raises(ValueError, match="IPv6 zone"):
        parser.range("fe80::%eth0/64")


def test_region_index_skips_names_that_are_not_strings():
    index = index_from_names(
        [({"a": 1}, "westeurope"), (7, "westeurope"), ("AzureCloud.germanywestcentral", "germanywc")]
    )
    assert index.code_for("germanywestcentral") == "germanywc"
    assert index.code_for("westeurope") == "westeurope"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[" * 2000 + "]" * 2000, "too deeply"),
        ('{"cloud": "Public", "region": "westeurope", "run_id": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"cloud": "Public", "region": "westeurope", "run_id": ' + "1" * 4400 + "}", "over the"),
        ('{"cloud": "Public", "region": "westeurope", "run_id": "r", "x": NaN}', "NaN"),
    ],
    ids=["nesting", "surrogate", "too long", "NaN"],
)
def test_malformed_region_messages_are_bad_messages(content, problem):
    with pytest.raises(BadMessage, match=problem):
        parse_region_message(content)


def test_text_logs_escape_newlines_from_outside(capsys):
    logs.configure("text", stream=sys.stdout)
    try:
        logs.log_event(
            logging.getLogger("t"),
            "region_checked",
            "checked\nerror   forged: line",
            run_id="r1\nerror   message_poisoned: forged",
            bad="\ud800",
        )
    finally:
        logs.configure("json")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "run_id=r1\\nerror   message_poisoned: forged" in out and "bad=\\ud800" in out


def test_json_logs_stay_one_encodable_line_with_a_lone_surrogate(capsys):
    logs.configure("json", stream=sys.stdout)
    logs.log_event(logging.getLogger("t"), "message_poisoned", "x", reason="\ud800")
    [line] = capsys.readouterr().out.splitlines()
    line.encode("utf-8")
    assert json.loads(line)["reason"] == "\ud800"


def test_status_shows_a_corrupt_state_and_a_numeric_poison_record(capsys):
    rows = [
        _region_row("Public/westeurope/latest.json", b"{not json"),
        _region_row("Public/x/latest.json", b"[1, 2]"),
        _region_row("Public/y/latest.json", b'{"region": "y\\nforged", "changeNumber": 5}'),
    ]
    records = [
        poisoned(Message("1", "r", "42", 1)),
        poisoned(Message("2", "r", json.dumps({"content": 42, "reason": "x"}), 1)),
        poisoned(Message("3", "r", "[" * 5000, 1)),
    ]
    _print_status(
        {
            "cloud": "Public",
            "queues": {"regions": 0},
            "regions": rows,
            "poisoned": [{"queue": "regions-poison", **r} for r in records],
        }
    )
    out = capsys.readouterr().out
    assert "westeurope" in out and "(unreadable state blob Public/westeurope/latest.json)" in out
    assert "y\\nforged" in out and "\ny\n" not in out
    assert out.count("not a servicetags poison record") == 3


def test_requeue_region_filter_takes_any_json_region():
    assert message_region('{"region": ["westeurope"]}') is None
    assert message_region('{"region": "WestEurope"}') == "westeurope"
    assert message_region("[" * 5000) is None
