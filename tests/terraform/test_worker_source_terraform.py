"""The worker's tag sources in Azure: `worker_source` and `worker_observed_source` (validated)
become the worker job's SERVICETAGS_SOURCE and SERVICETAGS_OBSERVED_SOURCE, and the plan
refuses the one pair the worker would refuse at start (the same source twice)."""

from __future__ import annotations

import ast
import re
from itertools import product
from typing import Any

import pytest

from tests.terraform.test_terraform import CONFIG_DOC, ROOT, TF, _attr, _blocks, _job_env, _module, _resources
from worker.main import SOURCES

DEPLOYABLE = ("arm", "download-center")  # `file` names one local file: not for a deployment


@pytest.fixture(scope="module")
def module() -> list[dict[str, Any]]:
    return _module(TF)


def _variable(module: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (body,) = [b for n, b in _blocks(module, "variable") if n == name]
    return body


def _allowed(condition: str, name: str) -> list[str]:
    """The list literal of a `contains([...], var.NAME)` validation."""
    match = re.fullmatch(r"\$\{contains\((\[.*?\]),\s*var\." + name + r"\)\}", condition)
    assert match, condition
    return ast.literal_eval(match.group(1))


def test_the_sources_are_variables_validated_to_what_the_worker_accepts(module: list) -> None:
    source = _variable(module, "worker_source")
    observed = _variable(module, "worker_observed_source")
    assert _attr(source, "default") == "arm" and _attr(observed, "default") == "none"
    assert _allowed(_attr(source, "validation", "condition"), "worker_source") == list(DEPLOYABLE)
    assert _allowed(_attr(observed, "validation", "condition"), "worker_observed_source") == [
        "none",
        *DEPLOYABLE,
    ]
    assert set(DEPLOYABLE) <= set(SOURCES)


def test_the_worker_job_reads_its_sources_from_the_variables(module: list) -> None:
    env = _job_env(module, "worker")
    assert env["SERVICETAGS_SOURCE"] == "${var.worker_source}"
    assert env["SERVICETAGS_OBSERVED_SOURCE"] == "${var.worker_observed_source}"
    # The Discovery API (primary or observed) is called in this subscription.
    assert env["AZURE_SUBSCRIPTION_ID"] == "${var.subscription_id}"


def test_the_plan_refuses_the_same_source_twice(module: list) -> None:
    worker = _resources(module)["azurerm_container_app_job"]["worker"]
    condition = _attr(worker, "lifecycle", "precondition", "condition")
    pair = r'"\$\{var\.worker_source\}/\$\{var\.worker_observed_source\}"'
    match = re.fullmatch(r"\$\{contains\((\[.*?\]),\s*" + pair + r"\)\}", condition)
    assert match, condition
    accepted = {tuple(pair.split("/")) for pair in ast.literal_eval(match.group(1))}
    every = set(product(DEPLOYABLE, ("none", *DEPLOYABLE)))
    assert accepted == {(s, o) for s, o in every if s != o}


def test_the_variables_are_documented() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    config = CONFIG_DOC.read_text()
    for name in ("worker_source", "worker_observed_source"):
        assert f"`{name}`" in deploy and f"`{name}`" in config, name
