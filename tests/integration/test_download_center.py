"""The `download-center` source against the local Download Center stand-in, on real files."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

from core.errors import TransientError
from devstack.download_center import DownloadCenter
from tests.conftest import real_report, snapshot_path
from tests.integration.pipeline import Pipeline
from worker.download_center import DownloadCenterSource, download_pipeline_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def center() -> Iterator[DownloadCenter]:
    with DownloadCenter(snapshot_path(346)) as running:
        yield running


@pytest.fixture
def source(center) -> DownloadCenterSource:
    center.state.set_mode("variable")
    center.state.requests.update(page=0, file=0, not_modified=0)
    client = download_pipeline_client(center.url, retry_total=3, retry_backoff=0.01, timeout=10)
    return DownloadCenterSource(client, pages_base=center.url, files_base=center.url)


@pytest.mark.parametrize("mode", ["variable", "href", "any"])
def test_the_file_is_found_in_each_page_form(center, source, mode):
    center.state.set_mode(mode)
    center.set_file(snapshot_path(347))
    fetched = source.fetch("Public", "westeurope")
    assert fetched.origin == (
        f"{center.url}/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/ServiceTags_Public_20250314.json"
    )
    assert json.loads(fetched.body)["changeNumber"] == 347


def test_a_file_of_the_wrong_cloud_is_rejected(center, source):
    center.set_file(snapshot_path(347), cloud="AzureChina")  # the CDN trap: Public at the China URL
    with pytest.raises(
        TransientError,
        match=r"ServiceTags_China_20250314\.json .* is a file of cloud "
        r"'Public', not 'AzureChina'",
    ):
        source.fetch("AzureChina", "chinanorth3")


def test_the_same_file_name_with_new_content_is_new_content(center, source, tmp_path):
    center.set_file(snapshot_path(347), name="ServiceTags_Public_20260413.json")
    first = source.fetch("Public", "westeurope")
    again = source.fetch("Public", "westeurope")
    assert again.body == first.body and center.state.requests["not_modified"] == 1
    center.set_file(snapshot_path(348), name="ServiceTags_Public_20260413.json")  # re-published
    second = source.fetch("Public", "westeurope")
    assert second.origin == first.origin
    assert json.loads(second.body)["changeNumber"] == 348
    assert center.state.requests["file"] == 2


def test_a_503_page_is_retried(center, source):
    center.set_file(snapshot_path(347))
    center.state.add_faults([503, 503])
    assert json.loads(source.fetch("Public", "westeurope").body)["changeNumber"] == 347
    assert center.state.requests["page"] == 3


def test_a_page_without_a_link_fails_clearly(center, source):
    center.state.set_mode("none")
    with pytest.raises(TransientError) as failure:
        source.fetch("Public", "westeurope")
    assert str(failure.value) == (
        f"{center.url}/en-us/download/details.aspx?id=56519: the details page yields no file link "
        '(looked for var AcOEt_DownloadUrl = "….json", href="…download.microsoft.com/download/….json", '
        "or any https://download.microsoft.com/download/….json)"
    )


@pytest.fixture
def pipeline(azurite, arm_endpoint, center) -> Iterator[Pipeline]:
    p = Pipeline(
        azurite.connection_string,
        arm_endpoint.url,
        str(arm_endpoint.ca_path),
        SERVICETAGS_SOURCE="download-center",
        SERVICETAGS_DOWNLOAD_CENTER_URL=center.url,
        SERVICETAGS_DOWNLOAD_FILES_URL=center.url,
    )
    center.state.set_mode("href")
    try:
        yield p
    finally:
        p.cleanup()


def test_the_pipeline_runs_on_the_download_center_and_reports_a_new_region(pipeline, center):
    center.set_file(snapshot_path(346))
    pipeline.produce("francecentral")
    assert pipeline.work().poisoned == 0
    center.set_file(snapshot_path(347))
    pipeline.produce("francecentral,indonesiacentral")
    assert pipeline.work().poisoned == 0
    reports = {r["region"]: r for r in pipeline.reports().values()}
    new = reports["indonesiacentral"]
    assert new == {**real_report(346, 347, "indonesiacentral"), "region_event": "added"}
    assert reports["francecentral"] == real_report(346, 347, "francecentral")
    assert pipeline.state("francecentral")["location"] == "francecentral"


def test_a_page_without_a_link_is_retried_then_poisoned_with_the_reason(pipeline, center):
    center.state.set_mode("none")
    pipeline.produce("francecentral")
    stats = pipeline.work()
    assert stats.poisoned == 2 and stats.retried >= 2
    reasons = [r["reason"] for r in pipeline.poisoned()]
    assert all("failed 3 times" in r and "the details page yields no file link" in r for r in reasons)


def test_the_download_file_is_gzip_free_and_byte_faithful(center):
    published = center.set_file(snapshot_path(347))
    assert published.body == gzip.decompress(snapshot_path(347).read_bytes())


def run_cli(*args: str, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "servicetags", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
        check=True,
    )
    return result.stdout


def test_the_api_observed_beside_the_file_shows_its_lag_and_the_propagation_time(
    azurite, arm_endpoint, center
):
    p = Pipeline(
        azurite.connection_string,
        arm_endpoint.url,
        str(arm_endpoint.ca_path),
        SERVICETAGS_SOURCE="download-center",
        SERVICETAGS_OBSERVED_SOURCE="arm",
        SERVICETAGS_DOWNLOAD_CENTER_URL=center.url,
        SERVICETAGS_DOWNLOAD_FILES_URL=center.url,
    )
    try:
        center.state.set_mode("variable")
        center.set_file(snapshot_path(346))
        arm_endpoint.set_snapshot(snapshot_path(346))
        p.produce("francecentral,japaneast")
        p.work()
        assert p.state("francecentral")["observed"]["equal"] is True

        center.set_file(snapshot_path(347))  # the file moves first
        arm_endpoint.set_snapshot(snapshot_path(347))
        arm_endpoint.set_snapshot(snapshot_path(346), locations=["francecentral"])  # a lagging location
        p.produce("francecentral,japaneast")
        assert p.work().poisoned == 0
        reports = {r["region"]: r for r in p.reports().values()}
        assert reports["francecentral"] == real_report(346, 347, "francecentral")  # from the file only
        lagging = p.state("francecentral")
        assert lagging["observed"]["change_number"] == "346" and lagging["observed"]["equal"] is False
        assert "last_report_propagated_at" not in lagging
        status = json.loads(run_cli("status", "--json", env=p.env))
        regions = {r["region"]: r for r in status["regions"]}
        assert regions["francecentral"]["observed"]["lag"] == 1
        assert regions["francecentral"]["observed"]["since"] == lagging["observed"]["since"]
        assert regions["japaneast"]["observed"]["lag"] == 0  # its location already serves 347
        assert regions["japaneast"]["last_report_propagated_at"] == p.state("japaneast")["last_checked_at"]
        text = run_cli("status", env=p.env)
        assert f"observed source: 1 change behind (change 346) since {lagging['observed']['since']}" in text

        arm_endpoint.clear_location_overrides()  # the API catches up
        p.produce("francecentral,japaneast")
        p.work()
        caught_up = p.state("francecentral")
        assert caught_up["observed"]["equal"] is True and caught_up["last_outcome"] == "unchanged"
        assert caught_up["last_report_propagated_at"] == caught_up["last_checked_at"]
        assert caught_up["last_report"] == lagging["last_report"]
        text = run_cli("status", env=p.env)
        assert f"last report propagated to the observed source at {caught_up['last_checked_at']}" in text
    finally:
        p.cleanup()


def test_a_file_over_the_limit_is_refused_without_reading_it_all(center):
    from core.errors import PermanentError

    center.state.set_mode("variable")
    center.set_file(snapshot_path(347))
    client = download_pipeline_client(center.url, retry_total=0, timeout=10)
    small = DownloadCenterSource(client, pages_base=center.url, files_base=center.url, max_bytes=1_000_000)
    with pytest.raises(
        PermanentError,
        match=r"ServiceTags_Public_20250314\.json: file is over the 1,000,000 "
        "bytes allowed",
    ):
        small.fetch("Public", "westeurope")
