"""Regions that appear, vanish and roll back, on Microsoft's real files (issue 10 item 1), and
region messages that must name an ARM location (issue 16 item 4)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lifecycle import EMPTY_SHA256
from runtime.report_schema import validate_report
from tests.conftest import real_report, snapshot_path
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(stores, arm_endpoint) -> Iterator[Pipeline]:
    """Over memory and over Azurite (the `stores` fixture)."""
    p = Pipeline(stores, arm_endpoint.url, str(arm_endpoint.ca_path))
    try:
        yield p
    finally:
        p.cleanup()


def run_cli(*args: str, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "servicetags", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
        check=True,
    ).stdout


def by_region(reports: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for report in reports.values():
        assert report["region"] not in out, f"two reports for {report['region']}"
        out[report["region"]] = report
    return out


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def without_region(cn: int, region_code: str, tmp: Path, *, change_number: int) -> Path:
    """A copy of the real file cn with one region's tags deleted, under a newer number."""
    doc = json.loads(gzip.decompress(snapshot_path(cn).read_bytes()))
    doc["values"] = [v for v in doc["values"] if v["properties"]["region"] != region_code]
    doc["changeNumber"] = change_number
    path = tmp / f"cn{cn}-without-{region_code}-as-{change_number}.json"
    path.write_text(json.dumps(doc))
    return path


KEPT = {"", "centralfrance", "austriaeast", "japaneast"}  # global, and three regions (data codes)


def restricted(cn: int, tmp: Path, *, drop: str | None = None, change_number: int | None = None) -> Path:
    """The real file cn cut down to a few regions (each as published), to keep `all` runs small;
    optionally without one region's tags and under another number."""
    doc = json.loads(gzip.decompress(snapshot_path(cn).read_bytes()))
    doc["values"] = [v for v in doc["values"] if v["properties"]["region"] in KEPT - {drop}]
    if change_number is not None:
        doc["changeNumber"] = change_number
    path = tmp / f"cn{cn}-{drop or 'all'}-{change_number or cn}.json"
    path.write_text(json.dumps(doc))
    return path


# Azurite only: whole-file runs whose time is the diff's, not storage's; once is enough (the
# memory variants of the shorter lifecycle tests below take the same storage paths).
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_a_region_launched_between_two_files_is_reported_as_new(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(346))
    pipeline.produce()
    assert pipeline.work().poisoned == 0
    assert pipeline.reports() == {}  # the cloud's first run: a silent baseline
    cloud = pipeline.cloud()
    assert cloud["watched_since"] and len(cloud["regions"]) == 62  # 63 codes with global
    assert all(entry["baseline"] for entry in cloud["first_seen"].values())

    arm_endpoint.set_snapshot(snapshot_path(347))
    assert pipeline.produce() == 63  # 62 regions and global; the new one is found by discovery
    assert pipeline.work().poisoned == 0
    written = by_region(pipeline.reports())
    new = written["indonesiacentral"]
    assert new == {**real_report(346, 347, "indonesiacentral"), "region_event": "added"}
    assert validate_report(new) is new
    assert {t["status"] for t in new["tags"]} == {"added"} and len(new["tags"]) == 37
    assert new["from"] == {"changeNumber": "346", "sha256": EMPTY_SHA256}
    assert new["summary"]["prefixes_added"] == 226
    for region, report in written.items():  # every other region: exactly `servicetags diff`
        if region != "indonesiacentral":
            assert report == real_report(346, 347, region), region
    state = pipeline.state("indonesiacentral")
    assert state["last_outcome"] == "added"
    assert state["last_report"].startswith("Public/indonesiacentral/346-347_")
    assert pipeline.cloud()["first_seen"]["indonesiacentral"]["baseline"] is False


# Azurite only: whole-file runs whose time is the diff's, not storage's; once is enough (the
# memory variants of the shorter lifecycle tests below take the same storage paths).
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_three_regions_appearing_at_once_are_each_new_under_their_arm_names(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(350))
    pipeline.produce("francecentral")  # a chosen list: the global worker still records the cloud
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(353))
    pipeline.produce("chilecentral,malaysiawest,southeastus")
    assert pipeline.work().poisoned == 0
    written = by_region(pipeline.reports())
    for region in ("chilecentral", "malaysiawest", "southeastus"):
        assert written[region] == {**real_report(350, 353, region), "region_event": "added"}, region
        assert written[region]["tags"] and all(t["status"] == "added" for t in written[region]["tags"])
    assert written["chilecentral"]["tags"][0]["region"] == "chilec"  # the data's code, kept in tags


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_a_deleted_region_is_reported_removed_retired_not_enqueued_and_new_when_it_returns(
    pipeline, arm_endpoint, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    arm_endpoint.set_snapshot(restricted(361, tmp_path))
    pipeline.produce()
    pipeline.work()

    arm_endpoint.set_snapshot(restricted(361, tmp_path, drop="austriaeast", change_number=362))
    assert pipeline.produce() == 4  # three regions and global
    stats = pipeline.work()
    assert stats.poisoned == 0 and pipeline.poisoned() == []
    [removed] = [r for r in pipeline.reports().values() if r["region"] == "austriaeast"]
    assert removed["region_event"] == "removed" and validate_report(removed) is removed
    expected = real_report(361, 346, "austriaeast")  # cn346 has no austriaeast: the same tags removed
    assert removed["tags"] == expected["tags"] and removed["summary"] == expected["summary"]
    assert len(removed["tags"]) == 37 and {t["status"] for t in removed["tags"]} == {"removed"}
    assert removed["from"] == expected["from"] and removed["to"] == {
        "changeNumber": "362",
        "sha256": EMPTY_SHA256,
    }
    assert len(pipeline.reports()) == 1  # the other regions did not change
    state = pipeline.state("austriaeast")
    assert state["retired"]["change_number"] == "362" and state["retired"]["since"]
    cloud = pipeline.cloud()
    assert "austriaeast" not in cloud["regions"] and cloud["retired"]["austriaeast"]["report"]
    assert len(events(caplog, "region_retired")) == 1
    status = json.loads(run_cli("status", "--json", env=pipeline.env))
    [line] = [r for r in status["regions"] if r["region"] == "austriaeast"]
    assert line["retired_since"] == state["retired"]["since"] and line["last_outcome"] == "removed"
    assert status["retired"]["austriaeast"]["change_number"] == "362"
    assert f"retired since {state['retired']['since']}" in run_cli("status", env=pipeline.env)

    messages = pipeline.produce_messages()  # the next run
    assert sorted(m.region for m in messages) == ["francecentral", "global", "japaneast"]
    assert pipeline.work().poisoned == 0 and pipeline.poisoned() == []

    arm_endpoint.set_snapshot(restricted(364, tmp_path))  # it is back
    pipeline.produce()
    assert pipeline.work().poisoned == 0
    [back_report] = [
        r
        for r in pipeline.reports().values()
        if r["region"] == "austriaeast" and r["to"]["changeNumber"] == "364"
    ]
    assert back_report["region_event"] == "added" and back_report["from"] == {
        "changeNumber": "362",
        "sha256": EMPTY_SHA256,
    }
    absent = real_report(346, 364, "austriaeast")  # cn346 has no austriaeast either
    assert back_report["tags"] == absent["tags"] and back_report["summary"] == absent["summary"]
    assert {t["status"] for t in back_report["tags"]} == {"added"}
    assert "retired" not in pipeline.state("austriaeast") and "austriaeast" in pipeline.cloud()["regions"]


# Azurite only: whole-file runs whose time is the diff's, not storage's; once is enough (the
# memory variants of the shorter lifecycle tests below take the same storage paths).
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_a_rolled_back_file_is_stale_once_and_the_next_file_reports_what_diff_says(
    pipeline, arm_endpoint, caplog
):
    regions = "francecentral,indonesiacentral,southcentralus2,chilecentral"  # the demo replays `all`
    arm_endpoint.set_snapshot(snapshot_path(357))
    pipeline.produce(regions)
    pipeline.work()
    caplog.clear()

    arm_endpoint.set_snapshot(snapshot_path(346))  # the mirror's rollback: four of these vanish
    pipeline.produce(regions)
    stats = pipeline.work()
    assert stats.poisoned == 0 and pipeline.poisoned() == [] and pipeline.reports() == {}
    for region in ("indonesiacentral", "southcentralus2", "francecentral", "global"):
        state = pipeline.state(region)
        assert state["last_outcome"] == "stale", region
        assert state["stale"]["change_number"] == "346" and state["changeNumber"] == "357"
    [regressed] = events(caplog, "source_regressed")
    assert regressed.seen_change_number == "346" and regressed.recorded_change_number == "357"
    assert "retired" not in pipeline.state("indonesiacentral")
    assert pipeline.cloud()["retired"] == {}

    arm_endpoint.set_snapshot(snapshot_path(358))
    pipeline.produce(regions)
    assert pipeline.work().poisoned == 0
    written = by_region(pipeline.reports())
    assert written and all("region_event" not in r for r in written.values())
    for region, report in written.items():
        assert report == real_report(357, 358, region), region
    expected = {r for r in [*regions.split(","), "global"] if real_report(357, 358, r)["tags"]}
    assert set(written) == expected


@pytest.mark.parametrize(
    ("region", "reason"),
    [
        ("all", "region 'all' is not a location: a message names one ARM location"),
        ("ALL", "region 'ALL' is not a location"),
        (
            "germanywc",
            "region 'germanywc' is the data's code for germanywestcentral; a message names the "
            "ARM location 'germanywestcentral'",
        ),
        ("centralfrance", "is the data's code for francecentral"),
    ],
)
def test_a_region_message_must_name_an_arm_location(pipeline, region, reason):
    pipeline.queue.send(json.dumps({"cloud": "Public", "region": region, "run_id": "bad"}))
    pipeline.queue.send(json.dumps({"cloud": "Public", "region": "germanywestcentral", "run_id": "good"}))
    stats = pipeline.work()
    assert stats.poisoned == 1 and stats.retried == 0
    [record] = pipeline.poisoned()
    assert reason in record["reason"] and record["dequeue_count"] == 1
    assert pipeline.state(region.lower()) is None
    assert pipeline.state("germanywestcentral")["changeNumber"] == "361"
    assert [n for n in pipeline.snapshots.names() if n.endswith("latest.json")] == [
        "Public/germanywestcentral/latest.json"
    ]


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
@pytest.mark.parametrize("crash_at", ["after_snapshot", "after_report", "before_delete"])
def test_a_worker_killed_while_reporting_a_new_region_leaves_one_report(pipeline, arm_endpoint, crash_at):
    arm_endpoint.set_snapshot(snapshot_path(346))
    pipeline.produce("francecentral")
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(347))
    pipeline.produce("indonesiacentral")
    victim = pipeline.spawn_worker(SERVICETAGS_CRASH_AT=crash_at, SERVICETAGS_VISIBILITY_TIMEOUT="2")
    _, stderr = victim.communicate(timeout=120)
    assert victim.returncode == -9, f"the worker was not killed at the crash point: {stderr}"
    pipeline.work()
    [report] = [r for r in pipeline.reports().values() if r["region"] == "indonesiacentral"]
    assert report == {**real_report(346, 347, "indonesiacentral"), "region_event": "added"}
    assert pipeline.state("indonesiacentral")["sha256"] == report["to"]["sha256"]
    assert pipeline.queue.depth() == 0 and pipeline.poisoned() == []


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
@pytest.mark.parametrize("crash_at", ["after_snapshot", "after_report", "after_retire", "before_delete"])
def test_a_worker_killed_while_retiring_a_region_leaves_one_report_and_a_retirement(
    pipeline, arm_endpoint, tmp_path, crash_at
):
    arm_endpoint.set_snapshot(snapshot_path(361))
    pipeline.produce("austriaeast")
    pipeline.work()
    arm_endpoint.set_snapshot(without_region(361, "austriaeast", tmp_path, change_number=362))
    pipeline.produce("austriaeast")
    victim = pipeline.spawn_worker(SERVICETAGS_CRASH_AT=crash_at, SERVICETAGS_VISIBILITY_TIMEOUT="2")
    _, stderr = victim.communicate(timeout=120)
    assert victim.returncode == -9, f"the worker was not killed at the crash point: {stderr}"
    assert pipeline.work().poisoned == 0
    [report] = [r for r in pipeline.reports().values() if r["region"] == "austriaeast"]
    assert report["region_event"] == "removed" and len(report["tags"]) == 37
    assert pipeline.state("austriaeast")["retired"]["report"] == next(
        n for n, r in pipeline.reports().items() if r is not None and r["region"] == "austriaeast"
    )
    cloud = pipeline.cloud()
    assert "austriaeast" in cloud["retired"] and "austriaeast" not in cloud["regions"]
    assert pipeline.queue.depth() == 0 and pipeline.poisoned() == []


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_two_workers_with_duplicated_messages_report_a_new_region_once(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(346))
    pipeline.produce("francecentral")
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(347))
    message = json.dumps({"cloud": "Public", "region": "indonesiacentral", "run_id": "dup"})
    for _ in range(6):
        pipeline.queue.send(message)
    workers = [pipeline.spawn_worker() for _ in range(2)]
    for w in workers:
        _, stderr = w.communicate(timeout=120)
        assert w.returncode == 0, stderr
    reports = [r for r in pipeline.reports().values() if r["region"] == "indonesiacentral"]
    assert len(reports) == 1 and reports[0]["region_event"] == "added"


def test_a_region_whose_location_is_gone_is_read_from_the_default_location_and_retired(
    pipeline, arm_endpoint, tmp_path
):
    arm_endpoint.set_snapshot(snapshot_path(361))
    pipeline.produce("austriaeast")
    pipeline.work()
    arm_endpoint.set_snapshot(without_region(361, "austriaeast", tmp_path, change_number=362))
    arm_endpoint.fail_always("austriaeast", "400")  # ARM: NoRegisteredProviderFound for that location
    arm_endpoint.reset_counts()
    pipeline.produce("austriaeast")
    assert pipeline.work().poisoned == 0 and pipeline.poisoned() == []
    [report] = pipeline.reports().values()
    assert report["region"] == "austriaeast" and report["region_event"] == "removed"
    state = pipeline.state("austriaeast")
    assert state["retired"]["change_number"] == "362" and state["location"] == "westeurope"
    assert arm_endpoint.request_count("austriaeast") == 1  # a 400 is not retried


def test_an_unknown_name_without_a_state_is_still_an_unknown_region(pipeline, arm_endpoint):
    arm_endpoint.fail_always("atlantis", "400")
    pipeline.queue.send(json.dumps({"cloud": "Public", "region": "atlantis", "run_id": "x"}))
    assert pipeline.work().poisoned == 1
    [record] = pipeline.poisoned()
    assert "unknown region 'atlantis'" in record["reason"] and record["dequeue_count"] == 1


def test_a_watched_region_gone_before_its_first_check_is_retired_not_poisoned(
    pipeline, arm_endpoint, tmp_path
):
    arm_endpoint.set_snapshot(snapshot_path(361))
    pipeline.produce("francecentral")  # the global check records austriaeast as watched
    pipeline.work()
    assert "austriaeast" in pipeline.cloud()["regions"] and pipeline.state("austriaeast") is None
    arm_endpoint.set_snapshot(without_region(361, "austriaeast", tmp_path, change_number=362))
    pipeline.queue.send(json.dumps({"cloud": "Public", "region": "austriaeast", "run_id": "late"}))
    assert pipeline.work().poisoned == 0
    assert pipeline.reports() == {} and pipeline.cloud()["retired"]["austriaeast"]["report"] is None
