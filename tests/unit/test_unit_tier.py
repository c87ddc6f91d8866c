"""The unit tier's own rule: it starts no Azurite (so it runs where Node is absent)."""

from __future__ import annotations

import pytest

from devstack.azurite import start_azurite
from tests.unit.conftest import REFUSAL


def test_starting_azurite_in_the_unit_tier_fails_loudly() -> None:
    with pytest.raises(pytest.fail.Exception, match="tests/unit runs without Node") as failed:
        start_azurite(timeout=1)
    assert str(failed.value) == REFUSAL
