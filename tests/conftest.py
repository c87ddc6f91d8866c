"""Shared test fixtures: where the real Microsoft snapshots live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SERVICETAGS_TEST_DATA", ROOT.parent / "shared/data/servicetags"))


def snapshot_path(cn: int) -> Path:
    """The real download file whose top-level changeNumber is `cn`."""
    matches = sorted(SHARED_DATA.glob(f"ServiceTags_Public_*_cn{cn}.json.gz"))
    if not matches:
        raise FileNotFoundError(f"no snapshot cn{cn} under {SHARED_DATA}")
    return matches[0]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"real snapshots expected at {SHARED_DATA}"
    return SHARED_DATA
