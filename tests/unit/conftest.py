"""The unit tier needs no Node: nothing under tests/unit may start Azurite.

Storage in unit tests is the in-memory adapters (`runtime.adapters.memory`). A test that asks
for Azurite here fails at once, naming the rule, rather than passing on a machine with Node
and failing on one without.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

import devstack.azurite

REFUSAL = (
    "tests/unit runs without Node: use the in-memory adapters (runtime.adapters.memory), "
    "or move the test to tests/integration"
)


@pytest.fixture(autouse=True)
def _no_azurite_in_the_unit_tier(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(root: Path | None = None) -> NoReturn:
        pytest.fail(REFUSAL, pytrace=False)

    # start_azurite finds its binary through this module attribute, however it was imported.
    monkeypatch.setattr(devstack.azurite, "azurite_binary", refuse)
    yield
