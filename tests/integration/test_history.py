"""The history on the real weekly files: import, lookup, history, the index, the web view.

The 24 bundled files are imported once for the module (in-process, on the session's Azurite),
for `global` and three regions, which keeps the import to a few seconds; every answer is
checked against the raw snapshots.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import feedparser
import pytest
from azure.storage.blob import BlobServiceClient

from core.history_index import Index
from runtime.adapters.storage import AzureBlobStore
from runtime.history_store import imported_marker, index_name, sync
from servicetags.history_command import main as history_main
from servicetags.import_command import Stores, collect, import_files
from tests.conftest import ROOT, SHARED_DATA, real_snapshot, snapshot_path

REGIONS = "global,eastus2,westeurope,indonesiacentral"
RESULTS = ROOT / "test-results"
CONTAINERS = ("snapshots", "reports", "history", "notifications", "web")


class Imported(NamedTuple):
    stores: Stores
    containers: dict[str, str]
    index_file: Path
    index: Index
    counts: dict[str, int]


def _stores(service: BlobServiceClient) -> tuple[Stores, dict[str, str]]:
    names = {kind: f"{kind}-{uuid.uuid4().hex[:10]}" for kind in CONTAINERS}
    for name in names.values():
        service.create_container(name)
    return Stores(*(AzureBlobStore(service.get_container_client(names[k])) for k in CONTAINERS)), names


def _etags(service: BlobServiceClient, names: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every blob's ETag: any write, even of the same bytes, changes it."""
    return {
        kind: {b.name: b.etag for b in service.get_container_client(name).list_blobs()}
        for kind, name in names.items()
    }


def _blobs(service: BlobServiceClient, names: dict[str, str]) -> dict[str, dict[str, bytes]]:
    out = {}
    for kind, name in names.items():
        client = service.get_container_client(name)
        out[kind] = {b.name: client.download_blob(b.name).readall() for b in client.list_blobs()}
    return out


@pytest.fixture(scope="module")
def service(azurite: Any) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="module")
def imported(service: BlobServiceClient, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    stores, names = _stores(service)
    counts = import_files(collect([SHARED_DATA]), stores, regions=REGIONS, out=io.StringIO())
    data = stores.history.read(index_name("Public")).data
    path = tmp_path_factory.mktemp("history") / "Public.bin"
    path.write_bytes(data)
    return Imported(stores, names, path, Index.from_bytes(data), counts)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = history_main(list(argv), prog=f"servicetags {argv[0]}")
    out, err = capsys.readouterr()
    return code, out, err


def holders(snapshot: Any, address: str, regions: set[str]) -> set[str]:
    """A linear scan over every prefix of the imported regions: what the index must agree with."""
    from core.prefixes import canonical_range

    net = ipaddress.ip_network(address, strict=False)
    version, lo, hi = net.version, int(net.network_address), int(net.broadcast_address) + 1
    codes = {t.region for t in snapshot.tags.values() if t.name.rsplit(".", 1)[-1].lower() in regions}
    codes.add("")
    found = set()
    for tag in snapshot.tags.values():
        if tag.region in codes:
            for prefix in tag.prefixes:
                v, start, end = canonical_range(prefix)
                if v == version and start < hi and lo < end:
                    found.add(tag.id)
                    break
    return found


# ---- import


def test_import_records_every_file_in_change_order(imported):
    assert imported.counts["files"] == 24 and imported.counts["skipped"] == 0
    assert [cn for cn, _ in imported.index.changes][:3] == ["340", "341", "342"]
    assert imported.index.changes[-1] == ("369", "2025-09-06T00:00:00Z")
    assert sorted(imported.index.regions) == ["eastus2", "global", "indonesiacentral", "westeurope"]
    # indonesiacentral first appears in cn347: its history starts there.
    assert imported.index.regions["indonesiacentral"]["baseline"] == "347"


def test_a_second_import_writes_nothing(imported, service):
    before = _etags(service, imported.containers)
    again = import_files(collect([SHARED_DATA]), imported.stores, regions=REGIONS, out=io.StringIO())
    assert again["files"] == 0 and again["skipped"] == 24 and again.get("pages", 0) == 0
    assert _etags(service, imported.containers) == before


def test_imported_reports_are_marked_so_the_notifier_stays_quiet(imported):
    from notifier.delivery import Notifier

    report = imported.index.reports[0][0]
    assert imported.stores.notifications.read(imported_marker(report)) is not None

    class NoMail:
        def send(self, msg: Any) -> str:
            raise AssertionError("an imported report was e-mailed")

    from notifier.recipients import parse_recipients

    notifier = Notifier(
        reports=imported.stores.reports,
        markers=imported.stores.notifications,
        sender=NoMail(),
        mail_from="a@example.com",
        recipients=parse_recipients('[{"address": "b@example.com", "delivery": "report"}]'),
    )
    delivered = notifier.deliver(report, imported.stores.reports.blob_url(report))
    assert delivered.sent == () and not delivered.logged


def test_the_index_rebuilt_from_the_blobs_is_the_same(imported, service):
    history = AzureBlobStore(service.create_container(f"history-{uuid.uuid4().hex[:10]}"))
    for name in imported.stores.history.names("Public/changes/"):
        history.create(name, imported.stores.history.read(name).data)
    rebuilt = sync(
        "Public",
        snapshots=imported.stores.snapshots,
        reports=imported.stores.reports,
        history=history,
        clock=lambda: pytest.fail("every date comes from the ledger"),
    )
    assert rebuilt.changed and rebuilt.data == imported.index_file.read_bytes()


def test_import_killed_halfway_and_rerun_ends_with_the_same_blobs(service, azurite, tmp_path):
    files = [str(snapshot_path(cn)) for cn in (340, 341, 342)]
    whole, whole_names = _stores(service)
    import_files([Path(f) for f in files], whole, regions="global,westeurope", out=io.StringIO())
    _, names = _stores(service)
    env = {
        **os.environ,
        "SERVICETAGS_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "SERVICETAGS_SNAPSHOTS_CONTAINER": names["snapshots"],
        "SERVICETAGS_REPORTS_CONTAINER": names["reports"],
        "SERVICETAGS_HISTORY_CONTAINER": names["history"],
        "SERVICETAGS_NOTIFICATIONS_CONTAINER": names["notifications"],
        "SERVICETAGS_WEB_CONTAINER": names["web"],
    }
    argv = [sys.executable, "-m", "servicetags.cli", "import", *files, "--regions", "global,westeurope"]
    killed = subprocess.run(
        argv,
        env={**env, "SERVICETAGS_CRASH_AT": "after_report"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    halfway = _blobs(service, names)
    # Died in cn341 at its first report: cn340 is done, cn341 half-done, no index yet.
    assert len(halfway["reports"]) == 1 and set(halfway["history"]) == {"Public/changes/340.json"}
    rerun = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "340 already in the history" in rerun.stdout
    assert _blobs(service, names) == _blobs(service, whole_names)


# ---- lookup


def test_an_address_added_in_a_named_change_is_found_since_that_change(imported, capsys):
    # 4.150.76.80/29 joined AzureInformationProtection in cn364 (not in cn361's file, in cn364's).
    assert "4.150.76.80/29" not in real_snapshot(361).tags["AzureInformationProtection"].prefixes
    assert "4.150.76.80/29" in real_snapshot(364).tags["AzureInformationProtection"].prefixes
    code, out, _ = run(
        capsys, "lookup", "4.150.76.83", "--index", str(imported.index_file), "--format", "json"
    )
    assert code == 0
    doc = json.loads(out)
    hit = next(m for m in doc["matches"] if m["tag"] == "AzureInformationProtection")
    assert hit["prefix"] == "4.150.76.80/29" and hit["region"] == "global"
    assert hit["since"]["changeNumber"] == "364" and hit["since"]["date"] == "2025-07-30T00:00:00Z"
    assert hit["since"]["report"].startswith("Public/global/361-364_")
    assert {m["tag"] for m in doc["matches"]} == holders(
        real_snapshot(369), "4.150.76.83", {"eastus2", "westeurope", "indonesiacentral"}
    )
    # As of before that change, it was not there.
    code, out, _ = run(
        capsys,
        "lookup",
        "4.150.76.83",
        "--index",
        str(imported.index_file),
        "--change",
        "361",
        "--format",
        "json",
    )
    assert "AzureInformationProtection" not in {m["tag"] for m in json.loads(out)["matches"]}
    code, out, _ = run(
        capsys, "lookup", "4.150.76.83", "--index", str(imported.index_file), "--at", "2025-08-01"
    )
    assert code == 0 and "AzureInformationProtection" in out and "since 2025-07-30 (change 364" in out


def test_a_cidr_overlapping_two_tags_returns_both(imported, capsys):
    code, out, _ = run(
        capsys, "lookup", "4.150.76.0/24", "--index", str(imported.index_file), "--format", "json"
    )
    found = {m["tag"] for m in json.loads(out)["matches"]}
    assert code == 0 and {"AzureInformationProtection", "OneDsCollector"} <= found
    assert found == holders(
        real_snapshot(369), "4.150.76.0/24", {"eastus2", "westeurope", "indonesiacentral"}
    )


def test_an_ipv6_address_agrees_with_a_linear_scan(imported, capsys):
    tag = real_snapshot(369).tags["AzureCloud.westeurope"]
    prefix = sorted(p for p in tag.prefixes if ":" in p)[0]
    address = str(ipaddress.ip_network(prefix)[1])
    code, out, _ = run(capsys, "lookup", address, "--index", str(imported.index_file), "--format", "json")
    assert code == 0
    assert {m["tag"] for m in json.loads(out)["matches"]} == holders(
        real_snapshot(369), address, {"eastus2", "westeurope", "indonesiacentral"}
    )


def test_an_address_in_no_tag_finds_nothing_with_exit_1(imported, capsys):
    code, out, err = run(capsys, "lookup", "192.168.10.1", "--index", str(imported.index_file))
    assert code == 1 and out == "" and "in no Public service tag" in err


def test_lookup_reads_the_index_from_blob_storage(imported, azurite, capsys, monkeypatch):
    monkeypatch.setenv("SERVICETAGS_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("SERVICETAGS_HISTORY_CONTAINER", imported.containers["history"])
    monkeypatch.setenv("SERVICETAGS_WEB_PUBLISH", "false")
    monkeypatch.delenv("SERVICETAGS_HISTORY_INDEX", raising=False)
    code, out, _ = run(capsys, "lookup", "4.150.76.83")
    assert code == 0 and "AzureInformationProtection" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lookup", "20.20.300.1"], "'20.20.300.1' is not an IPv4 or IPv6 address or CIDR block"),
        (["lookup", "10.0.0.0/33"], "the prefix length must be 0 to 32"),
        (
            ["lookup", "4.150.76.83", "--at", "2024-12-01"],
            "2024-12-01 is before the history, which starts on 2025-01-12",
        ),
        (["lookup", "4.150.76.83", "--at", "yesterday"], "'yesterday' is not a date"),
        (["lookup", "4.150.76.83", "--change", "999"], "change 999 is not in the history"),
        (["history", "NoSuchTag"], "'NoSuchTag' is not an address, a CIDR block or a tag in the history"),
        (["history", "4.150.76.83", "--since", "2020-01-01"], "2020-01-01 is before the history"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(imported, capsys, argv, message):
    code, out, err = run(capsys, *argv, "--index", str(imported.index_file))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_an_empty_index_is_one_line_and_exit_2(tmp_path, capsys):
    from core.history_index import empty_index

    path = tmp_path / "empty.bin"
    path.write_bytes(empty_index("Public"))
    code, _, err = run(capsys, "lookup", "4.150.76.83", "--index", str(path))
    assert (
        code == 2
        and err == "servicetags lookup: the Public history index is empty (nothing imported or checked yet)\n"
    )
    (tmp_path / "junk.bin").write_bytes(b"not an index")
    code, _, err = run(capsys, "lookup", "4.150.76.83", "--index", str(tmp_path / "junk.bin"))
    assert code == 2 and "not a servicetags history index" in err and err.count("\n") == 1


# ---- history


def test_an_address_whose_prefix_left_a_tag_shows_the_leave(imported, capsys):
    # 4.150.17.154/32 was in ServiceBus from the first file and left it in cn364.
    assert "4.150.17.154/32" in real_snapshot(361).tags["ServiceBus"].prefixes
    assert "4.150.17.154/32" not in real_snapshot(364).tags["ServiceBus"].prefixes
    code, out, _ = run(
        capsys, "history", "4.150.17.154", "--index", str(imported.index_file), "--format", "json"
    )
    events = [e for e in json.loads(out)["events"] if e["tag"] == "ServiceBus"]
    assert code == 0
    assert [(e["kind"], e["change_number"], e["prefix"]) for e in events] == [
        ("joined", "340", "4.150.17.154/32"),
        ("left", "364", "4.150.17.154/32"),
    ]
    assert events[0]["report"] is None  # in the first snapshot
    assert (
        events[1]["report"].startswith("Public/global/361-364_")
        and events[1]["date"] == "2025-07-30T00:00:00Z"
    )
    code, out, _ = run(
        capsys, "history", "4.150.17.154", "--index", str(imported.index_file), "--since", "2025-07-01"
    )
    assert "left    ServiceBus" in out and "joined  ServiceBus" not in out


def test_history_of_a_tag_lists_its_joins_and_leaves(imported, capsys):
    code, out, _ = run(
        capsys,
        "history",
        "azureinformationprotection",
        "--index",
        str(imported.index_file),
        "--since",
        "2025-07-30",
        "--format",
        "json",
    )
    events = json.loads(out)["events"]
    assert (
        code == 0
        and {"kind": "joined", "prefix": "4.150.76.80/29", "change_number": "364"}.items()
        <= next(e for e in events if e["prefix"] == "4.150.76.80/29").items()
    )
    assert all(e["tag"] == "AzureInformationProtection" for e in events)


# ---- web view


def test_the_feeds_are_valid_atom_with_stable_ids(imported):
    web = imported.stores.web
    for name in ("Public/feed.atom", "Public/feeds/westeurope.atom"):
        text = web.read(name).data
        feed = feedparser.parse(text)
        assert not feed.bozo, feed.bozo_exception
        assert feed.version == "atom10"
        for key in ("id", "title", "updated"):
            assert feed.feed.get(key), key
        assert feed.feed.author == "servicetags-watch"
        assert any(link.rel == "self" for link in feed.feed.links)
        assert feed.entries
        for entry in feed.entries:
            assert entry.id.startswith("tag:servicetags-watch,2025:Public/")
            assert entry.title and entry.updated and entry.link
        assert text.count(b"<id>") == len(feed.entries) + 1
    everything = feedparser.parse(web.read("Public/feed.atom").data)
    newest = everything.entries[0]
    assert newest.updated == "2025-09-06T00:00:00Z"
    assert newest.id == "tag:servicetags-watch,2025:" + next(
        r[0] for r in reversed(imported.index.reports) if r[3] == "369" and r[0] == newest.id.split(":", 2)[2]
    )


@pytest.fixture(scope="module")
def site(imported: Imported) -> Iterator[str]:
    from devstack.web_server import serve_in_thread

    server, url = serve_in_thread(imported.stores.web.client)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.browser.chromium import chromium
    from tests.integration.browser import Browser

    handle = Browser(chromium())
    yield handle
    handle.close()


def test_the_index_page_shows_the_chart_and_the_latest_region(site, browser, imported):
    page = browser.page()
    try:
        page.goto(site + "Public/index.html")
        bars = page.evaluate("document.querySelectorAll('#weekly-chart rect.added').length")
        assert bars == len(imported.index.weekly_counts()) > 10
        assert page.evaluate("document.getElementById('weekly-chart').getBoundingClientRect().height") > 100
        assert page.evaluate("document.getElementById('latest-change').textContent") == "369"
        latest = page.evaluate("document.querySelector('#latest-by-region tbody tr').dataset.region")
        # The newest report (cn369) with the most recent date comes first.
        assert latest in {r[1] for r in imported.index.reports if r[3] == "369"}
        page.screenshot(RESULTS / "web-index.png")
        # A report page is one click away and readable.
        page.evaluate("document.querySelector('#latest-by-region tbody tr a').click()")
        page.wait_for("location.pathname.includes('/reports/')")
        page.wait_for("document.readyState === 'complete' && document.querySelector('article.tag') !== null")
        assert "369" in page.evaluate("document.querySelector('h1').textContent")
        page.screenshot(RESULTS / "web-report.png")
    finally:
        page.close()


def test_the_lookup_page_answers_a_typed_address(site, browser):
    page = browser.page()
    try:
        page.goto(site + "Public/lookup.html")
        page.wait_for("document.body.dataset.ready === '1'")
        page.type_text("#query", "4.150.76.83")
        page.press_enter()
        page.wait_for("!document.getElementById('results').hidden")
        rows = page.evaluate(
            "[...document.querySelectorAll('#results tr.hit')].map(r => [...r.cells].map(c => c.textContent))"
        )
        by_tag = {row[0]: row for row in rows}
        assert by_tag["AzureInformationProtection"][1:4] == [
            "global",
            "AzureInformationProtection",
            "4.150.76.80/29",
        ]
        assert by_tag["AzureInformationProtection"][4].startswith("2025-07-30 (change 364)")
        page.screenshot(RESULTS / "web-lookup.png")
        page.evaluate("document.getElementById('query').value = ''")
        page.type_text("#query", "not-an-address")
        page.press_enter()
        page.wait_for("document.getElementById('status').className === 'error'")
    finally:
        page.close()


def test_publish_from_the_queue_takes_every_waiting_event_and_publishes_once(
    imported, azurite, capsys, monkeypatch
):
    from azure.storage.queue import QueueClient

    from web.publish import main as publish_main

    name = f"publish-{uuid.uuid4().hex[:10]}"
    queue = QueueClient.from_connection_string(azurite.connection_string, name)
    queue.create_queue()
    for _ in range(3):
        queue.send_message('{"eventType": "Microsoft.Storage.BlobCreated"}')
    for key, container in (
        ("SNAPSHOTS", "snapshots"),
        ("REPORTS", "reports"),
        ("HISTORY", "history"),
        ("NOTIFICATIONS", "notifications"),
        ("WEB", "web"),
    ):
        monkeypatch.setenv(f"SERVICETAGS_{key}_CONTAINER", imported.containers[container])
    monkeypatch.setenv("SERVICETAGS_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("SERVICETAGS_PUBLISH_QUEUE", name)
    assert publish_main(["--from-queue"]) == 0
    out = capsys.readouterr().out
    # Everything was already published by the import: nothing to write, the events are gone.
    assert (
        out.strip() == "Public: index unchanged (0 new reports); 0 web files written; 3 report events taken"
    )
    assert queue.get_queue_properties().approximate_message_count == 0
    queue.delete_queue()


def test_a_report_page_shows_its_impact_once_the_impact_document_exists(imported, service, site, browser):
    """The impact step writes impact/<report blob name> after the page may have been published:
    the next publish writes that page again, once, with the section (escaped text only)."""
    from core.impact import impact
    from tests.unit.test_impact import fixture_rules
    from web.pages import report_page_name
    from web.publish import publish

    [row] = [r for r in imported.index.reports if r[1] == "eastus2" and (r[2], r[3]) == ("340", "341")]
    name = row[0]
    report = json.loads(imported.stores.reports.read(name).data)
    container = f"impact-{uuid.uuid4().hex[:10]}"
    service.create_container(container)
    impacts = AzureBlobStore(service.get_container_client(container))
    data = imported.stores.history.read(index_name("Public")).data
    args = {
        "index_data": data,
        "reports": imported.stores.reports,
        "web": imported.stores.web,
        "impacts": impacts,
    }
    assert publish("Public", **args) == 0  # no impact yet: the page written by the import stays
    impacts.create(name, json.dumps(impact(report, fixture_rules().rules, report_name=name)).encode())
    assert publish("Public", **args) == 2  # the page, and the list of pages showing their impact
    assert publish("Public", **args) == 0
    page = browser.page()
    try:
        page.goto(site + report_page_name("Public", name))
        page.wait_for(
            "document.readyState === 'complete' && document.querySelector('section.impact') !== null"
        )
        text = page.evaluate("document.querySelector('section.impact').textContent")
        assert "eastus2: 5 of" in text and "rules touched" in text
        gained = "destinationAddressPrefix names Storage.EastUS2: gained 20.153.40.0/24, 57.150.250.0/23"
        assert gained in text
        # Before the tags: what it means for your rules comes first.
        assert (
            page.evaluate(
                "document.querySelector('section.impact').compareDocumentPosition("
                "document.querySelector('article.tag')) & Node.DOCUMENT_POSITION_FOLLOWING"
            )
            > 0
        )
        inert = "document.querySelectorAll('section.impact script, section.impact style').length"
        assert page.evaluate(inert) == 0
        page.screenshot(RESULTS / "web-report-impact.png")
    finally:
        page.close()
        service.delete_container(container)
