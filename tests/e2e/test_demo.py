"""The demo, end to end, on real snapshots: its reports agree with `servicetags diff`."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.change_report import change_report, index_of
from core.prefixes import PrefixParser
from runtime.snapshot_files import load_snapshot
from tests.conftest import ROOT, snapshot_path

pytestmark = pytest.mark.e2e


def run_demo(tmp_path: Path, *args: str) -> dict:
    summary = tmp_path / "summary.json"
    argv = [
        sys.executable,
        "-m",
        "servicetags",
        "demo",
        "--outbox",
        str(tmp_path / "outbox"),
        "--summary-json",
        str(summary),
        *args,
    ]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "regions checked" in result.stdout and "Timings:" in result.stdout
    return json.loads(summary.read_text())


def expected_summaries(old: Path, new: Path) -> dict[str, dict]:
    parser = PrefixParser()
    a, b = load_snapshot(old, parser), load_snapshot(new, parser)
    index = index_of(a, b)
    out = {}
    for region in [*index.names, "global"]:
        report = change_report(a, b, region=region, parser=parser, index=index)
        if report["tags"]:
            out[region] = report["summary"]
    return out


def check_against_diff(summary: dict, old: Path, new: Path, outbox: Path) -> None:
    expected = expected_summaries(old, new)
    got = {r["region"]: r["counts"] for r in summary["reports"]}
    assert len(got) == len(summary["reports"]), "one report per changed region"
    assert got == expected
    # The default: ONE digest e-mail for the catch-all recipient naming every changed region,
    # and one message per channel, each body in the outbox as sent.
    [entry] = summary["emails"]
    message = email.message_from_bytes(Path(entry["file"]).read_bytes(), policy=email.policy.default)
    assert str(message["X-Servicetags-Regions"]).strip().split(",") == sorted(expected)
    plain = message.get_body(("plain",)).get_content()
    assert plain.splitlines()[2].startswith(f"{len(expected)} regions, ")
    for region in expected:
        assert f"\n{region} " in plain and f"== {region} (change" in plain
    assert len(list(outbox.glob("*.eml"))) == 1
    channels = {m["channel"]: json.loads(Path(m["file"]).read_text()) for m in summary["channel_messages"]}
    assert sorted(m["channel"] for m in summary["channel_messages"]) == ["slack", "teams", "webhook"]
    assert [c["region"] for c in channels["webhook"]["changes"]] == sorted(expected)
    card = channels["teams"]["attachments"][0]["content"]
    headings = [b["text"] for b in card["body"] if b["type"] == "TextBlock" and b.get("weight") == "Bolder"]
    assert headings[1:] == sorted(expected)
    assert channels["slack"]["text"].startswith("Service tags Public, run demo-1-")


# The stack's impact step matched every report against the bundled rules (data/rules/) before
# the notifier started, so the digest shows it everywhere: cn340→cn341 gives Storage.EastUS2
# two prefixes, which the NSG rule naming that tag is told.
NSG = "eastus2: NSG rule nsg-app-westeurope securityRules/AllowStorageEastUS2"
GAINED = "destinationAddressPrefix names Storage.EastUS2: gained 20.153.40.0/24, 57.150.250.0/23"


def check_impact(summary: dict, outbox: Path) -> None:
    touched = {r["region"]: r["rules_affected"] for r in summary["reports"] if r["rules_affected"]}
    assert touched == {"eastus2": 5, "global": 6, "israelcentral": 2, "westeurope": 7}
    [entry] = summary["emails"]
    message = email.message_from_bytes(Path(entry["file"]).read_bytes(), policy=email.policy.default)
    plain = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Impact on your rules: 20 rules touched in 4 of 31 regions checked\n" in plain
    assert f"  {NSG}\n    {GAINED}\n" in plain
    assert "not yet computed" not in plain
    channels = {m["channel"]: json.loads(Path(m["file"]).read_text()) for m in summary["channel_messages"]}
    hook = channels["webhook"]["impact"]
    assert hook["rules_affected"] == 20 and hook["pending"] == []
    east2 = next(e for e in hook["reports"] if e["region"] == "eastus2")
    rule = next(i for i in east2["items"] if i["rule"] == "securityRules/AllowStorageEastUS2")
    assert GAINED in rule["lines"]
    card = channels["teams"]["attachments"][0]["content"]
    [impact] = [b for b in card["body"] if b["type"] == "Container"]
    assert f"**{NSG}**\n- {GAINED}" in [b["text"] for b in impact["items"]]
    slack = "\n".join(b["text"]["text"] for b in channels["slack"]["blocks"] if b["type"] == "section")
    assert f"*{NSG}*\n• {GAINED}" in slack


def test_default_demo_on_the_bundled_snapshots(tmp_path):
    summary = run_demo(tmp_path)
    assert summary["regions_checked"] == 63
    assert len(summary["reports"]) == 31
    bundled = ROOT / "data" / "snapshots"
    check_against_diff(
        summary,
        bundled / "ServiceTags_Public_2025-01-12_cn340.json.gz",
        bundled / "ServiceTags_Public_2025-01-14_cn341.json.gz",
        tmp_path / "outbox",
    )
    check_impact(summary, tmp_path / "outbox")


def test_demo_takes_an_api_shaped_file_and_a_download_file(tmp_path):
    doc = json.loads(gzip.decompress(snapshot_path(344).read_bytes()))
    doc["changeNumber"] = str(doc["changeNumber"])
    for value in doc["values"]:  # the ARM wire shape: string change numbers, no file-only fields
        props = value["properties"]
        props["changeNumber"] = str(props["changeNumber"])
        props.pop("regionId")
        props.pop("platform")
    old = tmp_path / "cn344-arm.json"
    old.write_text(
        json.dumps(
            {
                "name": "Public",
                "id": "/subscriptions/x/providers/Microsoft.Network/serviceTags/Public",
                "type": "Microsoft.Network/serviceTags",
                **doc,
            }
        )
    )
    new = snapshot_path(345)
    summary = run_demo(
        tmp_path,
        "--old",
        str(old),
        "--new",
        str(new),
        "--workers",
        "1",
        "--regions",
        "australiacentral,francecentral,japaneast",
        "--delivery",
        "report",
    )
    assert summary["regions_checked"] == 4  # three regions and global
    expected = {
        r: s
        for r, s in expected_summaries(old, new).items()
        if r in {"australiacentral", "francecentral", "japaneast", "global"}
    }
    assert {r["region"]: r["counts"] for r in summary["reports"]} == expected
    assert expected["australiacentral"]["tags_added"] >= 1  # cn345 added PowerBI.AustraliaCentral
    # Per-report delivery: one e-mail and one signed webhook per report; chat channels keep
    # one digest per run (the demo's choice: Slack takes one message a second).
    assert sorted(e["region"] for e in summary["emails"]) == sorted(expected)
    for entry in summary["emails"]:
        message = email.message_from_bytes(Path(entry["file"]).read_bytes(), policy=email.policy.default)
        assert str(message["X-Servicetags-Region"]).strip() == entry["region"]
        assert entry["region"] in message["Subject"]
    kinds = [m["channel"] for m in summary["channel_messages"]]
    assert {k: kinds.count(k) for k in set(kinds)} == {"teams": 1, "slack": 1, "webhook": 4}
    hooks = [
        json.loads(Path(m["file"]).read_text())
        for m in summary["channel_messages"]
        if m["channel"] == "webhook"
    ]
    assert sorted(h["region"] for h in hooks) == sorted(expected)


def test_demo_rejects_a_bad_snapshot_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"values": [')
    result = subprocess.run(
        [sys.executable, "-m", "servicetags", "demo", "--old", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("servicetags demo: ") and "is not valid JSON" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def _processes(marker: bytes, *, environ: bool = False, cwd: Path | None = None) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "cmdline").read_bytes()
                if environ:
                    text += (entry / "environ").read_bytes()
                if cwd is not None and Path(os.readlink(entry / "cwd")) != cwd:
                    continue
            except OSError:
                continue
            if marker in text:
                found.append(int(entry.name))
    return found


# This checkout's Azurite only: other checkouts on the machine start and stop their own.
AZURITE = str(ROOT / "node_modules" / ".bin" / "azurite").encode()


def _demo_processes() -> list[int]:
    """PIDs of what a demo started: its services run from its temporary state directory, and
    its workers and notifier carry that directory in their environment."""
    return _processes(b"servicetags-demo-", environ=True, cwd=ROOT)  # not other checkouts' demos


def test_ctrl_c_stops_everything_the_demo_started(tmp_path):
    import signal
    import time

    assert _demo_processes() == []
    azurites = len(_processes(AZURITE))
    demo = subprocess.Popen(
        [sys.executable, "-m", "servicetags", "demo", "--outbox", str(tmp_path / "out")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _demo_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _demo_processes(), "the demo's services never appeared"
    time.sleep(2)  # well into the baseline cycle
    demo.send_signal(signal.SIGINT)
    _, err = demo.communicate(timeout=60)
    assert demo.returncode == 130, err[-2000:]
    assert "interrupted; everything it started is stopped" in err
    assert _demo_processes() == []
    assert len(_processes(AZURITE)) == azurites


def test_replay_on_the_download_center_reports_a_new_region_and_emails_it(tmp_path):
    summary = run_demo(
        tmp_path,
        "--delivery",
        "report",
        "--source",
        "download-center",
        "--snapshots",
        str(snapshot_path(346)),
        str(snapshot_path(347)),
    )
    assert summary["source"] == "download-center"
    [step] = summary["steps"]
    assert step["file"] == str(snapshot_path(347)) and step["poisoned"] == [] and step["stale"] == []
    events = {r["region"]: r["region_event"] for r in step["reports"]}
    assert events.pop("indonesiacentral") == "added"
    assert set(events.values()) == {None}
    assert len(step["emails"]) == len(step["reports"])
    expected = expected_summaries(snapshot_path(346), snapshot_path(347))
    assert {r["region"]: r["counts"] for r in summary["reports"]} == expected
    [mail] = [e for e in summary["emails"] if e["region"] == "indonesiacentral"]
    assert mail["subject"].startswith(
        "[servicetags] New region indonesiacentral in Public: 37 tags, 226 prefixes, all added"
    )
    body = email.message_from_bytes(Path(mail["file"]).read_bytes(), policy=email.policy.default)
    assert body.get_body(("plain",)).get_content().startswith("New region indonesiacentral in Public")


def test_replay_through_a_rollback_is_stale_then_reports_what_diff_says(tmp_path):
    summary = run_demo(
        tmp_path,
        "--delivery",
        "report",
        "--snapshots",
        str(snapshot_path(357)),
        str(snapshot_path(346)),
        str(snapshot_path(358)),
    )
    rollback, after = summary["steps"]
    assert rollback["reports"] == [] and rollback["emails"] == [] and rollback["poisoned"] == []
    assert len(rollback["stale"]) == 68 and "indonesiacentral" in rollback["stale"]  # 67 regions and global
    assert rollback["source_regressed"] == [{"change_number": "346", "recorded": "357"}]
    assert after["poisoned"] == [] and after["stale"] == [] and after["source_regressed"] == []
    assert {r["region_event"] for r in after["reports"]} == {None}
    expected = expected_summaries(snapshot_path(357), snapshot_path(358))
    assert {r["region"]: r["counts"] for r in summary["reports"]} == expected
    assert len(after["emails"]) == len(expected)
