"""Shared test fixtures: where the real Microsoft snapshots live; the `azurite` mark."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from core.change_report import change_report
from core.model import Snapshot
from core.prefixes import PrefixParser
from runtime.snapshot_files import load_snapshot

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SERVICETAGS_TEST_DATA", ROOT / "data/snapshots"))


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


_PARSER = PrefixParser()
# Fixtures that start (or stand on) an Azurite, and so need Node: the session's, and the local
# stack of test_doctor.py. Tests that start one themselves carry the mark by hand.
_AZURITE_FIXTURES = {"azurite", "storage", "stack"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "azurite: needs Azurite, so Node (set by the fixtures a test uses); "
        "`pytest -m 'not azurite'` runs everything that does not",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        # A backend parameter (`stores`, the contract's `store` and `queue`) set to "azurite".
        on_azurite = callspec is not None and "azurite" in callspec.params.values()
        if on_azurite or _AZURITE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.azurite)


@cache
def real_snapshot(cn: int) -> Snapshot:
    """The real snapshot cn, parsed once per test session (a shared prefix table)."""
    return load_snapshot(snapshot_path(cn), _PARSER)


@cache
def _real_report_json(old: int, new: int, region: str) -> str:
    return json.dumps(change_report(real_snapshot(old), real_snapshot(new), region=region, parser=_PARSER))


def real_report(old: int, new: int, region: str = "all") -> dict:
    """`servicetags diff` of two real snapshots for a region: a fresh copy, safe to modify."""
    return json.loads(_real_report_json(old, new, region))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
