"""The queue pipeline on the local ARM endpoint and real snapshots, its storage on Azurite
and in memory (the `stores` fixture): the same tests over both."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache

import pytest

from core.change_report import change_report, index_of
from core.prefixes import PrefixParser
from runtime.snapshot_files import load_snapshot
from tests.conftest import ROOT, snapshot_path
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration
PARSER = PrefixParser()


@cache
def expected_reports(old_cn: int, new_cn: int) -> dict[str, dict]:
    """What `servicetags diff OLD NEW --region R` says, for every region with a change."""
    old = load_snapshot(snapshot_path(old_cn), PARSER)
    new = load_snapshot(snapshot_path(new_cn), PARSER)
    index = index_of(old, new)
    out = {}
    for region in [*index.names, "global"]:
        report = change_report(old, new, region=region, parser=PARSER, index=index)
        if report["tags"]:
            out[region] = report
    return out


@pytest.fixture
def pipeline(stores, arm_endpoint) -> Iterator[Pipeline]:
    p = Pipeline(stores, arm_endpoint.url, str(arm_endpoint.ca_path))
    try:
        yield p
    finally:
        p.cleanup()


def by_region(reports: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for report in reports.values():
        assert report["region"] not in out, f"two reports for {report['region']}"
        out[report["region"]] = report
    return out


def test_baseline_then_change_writes_exactly_the_reports_servicetags_diff_gives(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(340))
    assert pipeline.produce() == 1  # nothing known yet: `global` alone, whose worker fans out
    first = pipeline.work()
    assert first.processed == 63 and first.poisoned == 0
    assert pipeline.reports() == {}  # a baseline writes no report
    assert pipeline.state("germanywestcentral")["changeNumber"] == "340"

    arm_endpoint.set_snapshot(snapshot_path(341))
    assert pipeline.produce() == 63  # every region recorded by the first run, plus global
    second = pipeline.work()
    assert second.processed == 63 and second.poisoned == 0

    written = by_region(pipeline.reports())
    expected = expected_reports(340, 341)
    assert sorted(written) == sorted(expected)
    assert len(written) == 31
    for region, report in expected.items():
        assert written[region] == report, region
    state = pipeline.state("francecentral")
    assert state["changeNumber"] == "341" and state["location_change_number"] == "341"
    assert state["last_report"].startswith("Public/francecentral/340-341_")
    unchanged = pipeline.state("australiacentral")
    assert unchanged["changeNumber"] == "340" and unchanged["location_change_number"] == "341"
    assert unchanged["last_report"] is None


def test_same_content_under_a_new_change_number_writes_no_report(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(345))
    pipeline.produce("francecentral,japaneast")
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(346))
    pipeline.produce("francecentral,japaneast")
    assert pipeline.work().processed == 3
    assert pipeline.reports() == {}
    state = pipeline.state("japaneast")
    assert state["location_change_number"] == "346" and state["changeNumber"] == "345"


def test_changed_content_under_the_same_change_number_writes_a_report(pipeline, arm_endpoint, tmp_path):
    arm_endpoint.set_snapshot(snapshot_path(341))
    pipeline.produce("francecentral")
    pipeline.work()
    doc = json.loads(gzip.decompress(snapshot_path(341).read_bytes()))
    tag = next(v for v in doc["values"] if v["id"] == "AzureCloud.centralfrance")
    tag["properties"]["addressPrefixes"].append("198.51.100.0/24")
    edited = tmp_path / "cn341-edited.json"
    edited.write_text(json.dumps(doc))
    arm_endpoint.set_snapshot(edited)
    pipeline.produce("francecentral")
    pipeline.work()
    [report] = pipeline.reports().values()
    assert report["from"]["changeNumber"] == report["to"]["changeNumber"] == "341"
    assert report["region"] == "francecentral"
    [entry] = report["tags"]
    assert entry["id"] == "AzureCloud.centralfrance"
    assert entry["added_prefixes"] == entry["net_added"] == ["198.51.100.0/24"]
    assert report["summary"]["ipv4_addresses_added"] == 256


# Azurite only: the faults are the ARM endpoint's, not storage's, and waiting out their
# backoffs once is enough.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_transient_api_faults_are_retried_and_the_result_is_right(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(340))
    pipeline.produce("francecentral")
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(341))
    arm_endpoint.add_faults(
        ["429", "500", "503", "reset", "truncate", "429", "truncate"], location="francecentral"
    )
    pipeline.produce("francecentral")
    stats = pipeline.work(SERVICETAGS_MAX_TRIES="5")
    assert stats.poisoned == 0 and stats.retried >= 1
    assert arm_endpoint.request_count("francecentral") >= 8  # 7 faults, then the answer
    assert by_region(pipeline.reports())["francecentral"] == expected_reports(340, 341)["francecentral"]


def test_a_region_that_always_fails_is_poisoned_with_its_reason_then_requeued(pipeline, arm_endpoint):
    from runtime.poison_queues import message_region, requeue

    arm_endpoint.fail_always("japaneast", "500")
    pipeline.produce("japaneast,francecentral")
    stats = pipeline.work()
    assert stats.poisoned == 1
    [record] = pipeline.poisoned()
    assert record["queue"] == pipeline.settings.regions_queue
    assert record["dequeue_count"] == 3
    assert "failed 3 times" in record["reason"] and "HTTP 500" in record["reason"]
    assert json.loads(record["content"])["region"] == "japaneast"
    assert pipeline.state("francecentral") is not None and pipeline.state("japaneast") is None

    arm_endpoint.clear_faults()
    assert requeue(pipeline.poison, pipeline.queue, keep=lambda c: message_region(c) == "japaneast") == 1
    assert pipeline.work().processed == 1
    assert pipeline.state("japaneast")["changeNumber"] == "361"
    assert pipeline.poisoned() == []


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
@pytest.mark.parametrize("crash_at", ["after_snapshot", "after_report", "before_delete"])
def test_a_worker_killed_at_each_step_leaves_one_report_and_a_correct_state(pipeline, arm_endpoint, crash_at):
    arm_endpoint.set_snapshot(snapshot_path(340))
    pipeline.produce("francecentral")
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(341))
    pipeline.produce("francecentral")
    victim = pipeline.spawn_worker(SERVICETAGS_CRASH_AT=crash_at, SERVICETAGS_VISIBILITY_TIMEOUT="2")
    _, stderr = victim.communicate(timeout=120)
    assert victim.returncode == -9, f"the worker was not killed at the crash point: {stderr}"
    assert pipeline.work().processed >= 1  # the message reappears after its visibility timeout
    reports = pipeline.reports()
    assert len([r for r in reports.values() if r["region"] == "francecentral"]) == 1
    [(name, report)] = [(n, r) for n, r in reports.items() if r["region"] == "francecentral"]
    assert report == expected_reports(340, 341)["francecentral"]
    state = pipeline.state("francecentral")
    assert state["sha256"] == report["to"]["sha256"] and state["last_report"] == name
    assert pipeline.queue.depth() == 0 and pipeline.poisoned() == []


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_two_workers_and_duplicated_messages_write_one_report(pipeline, arm_endpoint):
    arm_endpoint.set_snapshot(snapshot_path(340))
    pipeline.produce("francecentral")
    pipeline.work()
    arm_endpoint.set_snapshot(snapshot_path(341))
    message = json.dumps({"cloud": "Public", "region": "francecentral", "run_id": "dup"})
    for _ in range(6):
        pipeline.queue.send(message)
    workers = [pipeline.spawn_worker() for _ in range(2)]
    for w in workers:
        _, stderr = w.communicate(timeout=120)
        assert w.returncode == 0, stderr
    reports = pipeline.reports()
    assert [r["region"] for r in reports.values()] == ["francecentral"]
    assert pipeline.state("francecentral")["sha256"] == next(iter(reports.values()))["to"]["sha256"]


BAD_MESSAGES = [
    ("not json {", "message is neither JSON nor base64-encoded JSON"),
    ("{not json", "message is not valid JSON"),
    ("%%%not-base64%%%", "message is neither JSON nor base64-encoded JSON"),
    (base64.b64encode(b"[1, 2]").decode(), "message must be a JSON object, not list"),
    ('{"cloud": "Public"}', "message lacks region, run_id"),
    ('{"cloud": "Public", "region": "atlantis", "run_id": "x"}', "unknown region 'atlantis'"),
    ('{"cloud": "AzureMars", "region": "francecentral", "run_id": "x"}', "unknown cloud 'AzureMars'"),
    (
        json.dumps({"cloud": "Public", "region": "francecentral", "run_id": "x" * 5000}),
        "over the 4096 a region message may have",
    ),
]


def test_bad_messages_go_to_poison_with_reasons_and_good_ones_are_processed(pipeline, arm_endpoint):
    good = json.dumps({"cloud": "Public", "region": "francecentral", "run_id": "good"})
    for content, _ in BAD_MESSAGES:
        pipeline.queue.send(content)
        pipeline.queue.send(good)
    stats = pipeline.work()
    assert stats.processed == len(BAD_MESSAGES) and stats.poisoned == len(BAD_MESSAGES)
    records = {r["content"]: r for r in pipeline.poisoned()}
    for content, reason in BAD_MESSAGES:
        assert reason in records[content]["reason"], (content, records[content]["reason"])
        assert records[content]["dequeue_count"] == 1  # no retry for what can never succeed
    assert pipeline.state("francecentral")["changeNumber"] == "361"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicetags", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_configuration_errors_are_one_clear_line(pipeline):
    import os

    base = {**os.environ, **pipeline.env}
    producer = run_cli("produce", env={**base, "SERVICETAGS_REGIONS": "France Central"})
    assert producer.returncode == 2
    assert producer.stderr.strip() == (
        "servicetags produce: SERVICETAGS_REGIONS='france central': "
        "france central is not a location name (use ARM names like "
        "francecentral, or 'all')"
    )
    worker = run_cli("worker", "--until-empty", env={**base, "SERVICETAGS_SOURCE": "ftp"})
    assert worker.returncode == 2
    assert worker.stderr.strip() == (
        "servicetags worker: SERVICETAGS_SOURCE='ftp' must be one of arm, file, download-center"
    )
    no_storage = {k: v for k, v in base.items() if k != "SERVICETAGS_STORAGE_CONNECTION_STRING"}
    missing = run_cli("produce", env=no_storage)
    assert missing.returncode == 2 and "SERVICETAGS_BLOB_ENDPOINT" in missing.stderr
    assert "Traceback" not in producer.stderr + worker.stderr + missing.stderr


# Azurite only: worker or CLI processes, which share no memory with the test.
@pytest.mark.parametrize("stores", ["azurite"], indirect=True)
def test_status_and_requeue_commands_show_and_move_poisoned_messages(pipeline, arm_endpoint):
    import os

    pipeline.queue.send('{"cloud": "Public", "region": "atlantis", "run_id": "x"}')
    pipeline.produce("francecentral")
    pipeline.work()
    env = {**os.environ, **pipeline.env}
    status = json.loads(run_cli("status", "--json", env=env).stdout)
    assert status["queues"][pipeline.settings.regions_queue] == 0
    assert status["queues"][f"{pipeline.settings.regions_queue}-poison"] == 1
    assert "unknown region 'atlantis'" in status["poisoned"][0]["reason"]
    regions = {r["region"]: r for r in status["regions"]}
    assert regions["francecentral"]["location_change_number"] == "361"
    text = run_cli("status", env=env).stdout
    assert "unknown region 'atlantis'" in text and "francecentral" in text
    moved = run_cli("requeue", "--region", "atlantis", env=env)
    assert moved.stdout.strip() == (
        f"requeued 1 message from {pipeline.settings.regions_queue}-poison "
        f"to {pipeline.settings.regions_queue}"
    )
    assert pipeline.queue.depth() == 1


def test_status_and_requeue_know_the_deadline_and_impact_queues(pipeline, monkeypatch, capsys):
    from core.ports import Message
    from core.runs import Deadline
    from runtime.queue_loop import poison_record
    from servicetags.ops_command import requeue_main, status_main

    suffix = pipeline.settings.regions_queue.removeprefix("regions-")
    deadlines, impact = f"deadlines-{suffix}", f"impact-{suffix}"
    for key, value in {
        **pipeline.env,
        "SERVICETAGS_DEADLINES_QUEUE": deadlines,
        "SERVICETAGS_IMPACT_QUEUE": impact,
    }.items():
        monkeypatch.setenv(key, value)
    pipeline.clients.ensure([], [deadlines, f"{deadlines}-poison", impact, f"{impact}-poison"])
    try:
        deadline = Deadline("Public", "weekly-2025-01-19").to_json()
        report = '{"report": "Public/francecentral/cn361.json"}'
        pipeline.clients.queue(f"{deadlines}-poison").send(
            poison_record(deadlines, Message("m1", "r", deadline, 5), "failed 5 times; last error: smtp down")
        )
        pipeline.clients.queue(f"{impact}-poison").send(
            poison_record(impact, Message("m2", "r", report, 1), "Resource Graph answered 403")
        )
        pipeline.clients.queue(impact).send(report)

        assert status_main(["--json"], "servicetags status") == 0
        status = json.loads(capsys.readouterr().out)
        s = pipeline.settings
        assert status["queues"] == {
            s.regions_queue: 0,
            f"{s.regions_queue}-poison": 0,
            s.events_queue: None,
            f"{s.events_queue}-poison": None,
            deadlines: 0,
            f"{deadlines}-poison": 1,
            impact: 1,
            f"{impact}-poison": 1,
        }
        # Each record names the queue its message came from, where requeue puts it back.
        assert sorted((p["queue"], p["reason"], p["content"]) for p in status["poisoned"]) == [
            (deadlines, "failed 5 times; last error: smtp down", deadline),
            (impact, "Resource Graph answered 403", report),
        ]
        assert status_main([], "servicetags status") == 0
        text = capsys.readouterr().out
        assert f"  {deadlines + '-poison':28} 1\n" in text and f"  {impact:28} 1\n" in text

        assert requeue_main(["--queue", "run-deadlines"], "servicetags requeue") == 0
        assert capsys.readouterr().out == f"requeued 1 message from {deadlines}-poison to {deadlines}\n"
        back = pipeline.clients.queue(deadlines).receive(5)
        assert back is not None and back.content == deadline  # the original, ready for the notifier
        assert requeue_main(["--queue", "impact"], "servicetags requeue") == 0
        assert capsys.readouterr().out == f"requeued 1 message from {impact}-poison to {impact}\n"
        assert pipeline.clients.queue(impact).depth() == 2
        assert requeue_main(["--queue", "run-deadlines", "--region", "x"], "servicetags requeue") == 2
        assert capsys.readouterr().err == (
            "servicetags requeue: --region applies to the regions queue only\n"
        )
    finally:  # Azurite is shared by the module's tests; a memory account is this test's own
        for name in (deadlines, f"{deadlines}-poison", impact, f"{impact}-poison"):
            if hasattr(pipeline.clients, "queues"):
                pipeline.clients.queues.delete_queue(name)


def test_file_source_reads_a_download_file(pipeline):
    pipeline.produce("germanywestcentral")
    stats = pipeline.work(SERVICETAGS_SOURCE="file", SERVICETAGS_SOURCE_FILE=str(snapshot_path(347)))
    assert stats.processed == 2
    assert pipeline.state("germanywestcentral")["changeNumber"] == "347"
