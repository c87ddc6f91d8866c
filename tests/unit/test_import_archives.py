"""What `servicetags import` reads off an archived file before importing it."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from core.errors import ServiceTagsError
from servicetags.import_command import archive_date, collect, read_archive
from tests.conftest import snapshot_path


def test_download_file_gzipped_gives_its_cloud_change_number_and_date():
    archive, raw = read_archive(snapshot_path(341))
    assert (archive.cloud, archive.change_number) == ("Public", "341")
    assert archive.date == datetime(2025, 1, 14, tzinfo=UTC)
    assert raw[:2] == b"\x1f\x8b"  # stored as is: the worker's source gets the file's bytes


@pytest.mark.parametrize("gz", [False, True])
def test_an_api_reply_plain_or_gzipped(tmp_path, gz):
    doc = {
        "name": "Public",
        "id": "/subscriptions/x/providers/Microsoft.Network/serviceTags/Public",
        "type": "Microsoft.Network/serviceTags",
        "changeNumber": "341",
        "cloud": "Public",
        "values": [
            {
                "name": "X",
                "id": "X",
                "properties": {"changeNumber": "1", "region": "", "systemService": "", "addressPrefixes": []},
            }
        ],
    }
    data = json.dumps(doc).encode()
    path = tmp_path / ("ServiceTags_Public_20250114.json" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    archive, _ = read_archive(path)
    assert (archive.cloud, archive.change_number, archive.date.day) == ("Public", "341", 14)


def test_microsoft_names_and_undated_names(tmp_path):
    assert archive_date(tmp_path / "ServiceTags_Public_20250106.json") == datetime(2025, 1, 6, tzinfo=UTC)
    undated = tmp_path / "tags.json"
    undated.write_text("{}")
    assert archive_date(undated).year >= 2025  # its modification time


def test_a_folder_without_archives_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ServiceTagsError, match=r"no \.json or \.json\.gz files"):
        collect([tmp_path])
