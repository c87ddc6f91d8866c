"""terraform/impact.tf, checked offline: the impact identity holds Reader on the configured
scopes (default: the deployment's subscription) and only what else the step uses; its queue
gets the same report events as the notifier's; the job runs the documented command and
environment."""

from __future__ import annotations

from typing import Any

import pytest

from tests.terraform.test_terraform import (
    TF,
    _attr,
    _contract_env_names,
    _instances,
    _job_env,
    _locals,
    _module,
    _resources,
)


@pytest.fixture(scope="module")
def module() -> list[dict[str, Any]]:
    return _module(TF)


@pytest.fixture(scope="module")
def resources(module: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    return _resources(module)


def test_reader_only_on_the_configured_scopes_defaulting_to_the_subscription(
    module: list, resources: dict
) -> None:
    reader = resources["azurerm_role_assignment"]["impact_reader"]
    assert _attr(reader, "for_each") == "${toset(local.impact_scopes)}"
    assert _attr(reader, "scope") == "${each.value}"
    assert _attr(reader, "role_definition_name") == "Reader"
    assert _attr(reader, "principal_id") == "${azurerm_user_assigned_identity.impact.principal_id}"
    scopes = _locals(module)["impact_scopes"]
    # (hcl2 renders the list literal's element as an interpolation)
    assert scopes == "${coalescelist(var.impact_scopes,['${data.azurerm_subscription.current.id}'])}"
    variables = {
        name: body for doc in module for block in doc.get("variable", []) for name, body in block.items()
    }
    assert variables["impact_scopes"]["default"] == [[]]


def test_the_impact_identity_holds_exactly_the_roles_it_uses(resources: dict) -> None:
    principal = "azurerm_user_assigned_identity.impact.principal_id"
    granted = {
        (_attr(b, "role_definition_name"), _attr(b, "scope"))
        for b in resources["azurerm_role_assignment"].values()
        if principal in _attr(b, "principal_id")
    }
    assert granted == {
        ("Reader", "${each.value}"),
        ("Storage Queue Data Contributor", "${azurerm_storage_queue.impact.id}"),
        ("Storage Queue Data Contributor", "${azurerm_storage_queue.impact_poison.id}"),
        ("Storage Blob Data Reader", "${azurerm_storage_container.reports.id}"),
        ("Storage Blob Data Reader", "${azurerm_storage_container.snapshots.id}"),
        ("Storage Blob Data Contributor", "${azurerm_storage_container.impact.id}"),
        ("AcrPull", "${azurerm_container_registry.main.id}"),
    }


def test_the_impact_queue_gets_the_same_report_events(module: list) -> None:
    subs = _instances(module, "azurerm_eventgrid_system_topic_event_subscription", "blob_created")
    ours, theirs = subs["reports_to_impact"], subs["reports_to_queue"]
    for key in (
        "included_event_types",
        "event_delivery_schema",
        "subject_filter",
        "delivery_identity",
        "dead_letter_identity",
        "storage_blob_dead_letter_destination",
    ):
        assert ours[key] == theirs[key], key
    assert _attr(ours, "storage_queue_endpoint", "queue_name") == "${azurerm_storage_queue.impact.name}"


def test_the_job_runs_the_impact_worker_with_documented_settings(module: list, resources: dict) -> None:
    job = resources["azurerm_container_app_job"]["impact"]
    container = _attr(job, "template", "container")
    assert _attr(container, "command") == ["servicetags", "impact-worker", "--until-empty"]
    assert _attr(container, "image") == "${local.image}"
    env = _job_env(module, "impact")
    assert env.keys() <= _contract_env_names(), env.keys() - _contract_env_names()
    assert env["SERVICETAGS_RULES_SOURCE"] == "resource-graph"
    assert "azurerm_user_assigned_identity.impact.client_id" in env["AZURE_CLIENT_ID"]
    assert "SERVICETAGS_STORAGE_CONNECTION_STRING" not in env and not job.get("secret")
    rule = _attr(job, "event_trigger_config", "scale", "rules")
    assert _attr(rule, "identity_id") == "${azurerm_user_assigned_identity.impact.id}"
    assert _attr(rule, "metadata")["queueName"] == "${azurerm_storage_queue.impact.name}"


def test_a_new_impact_document_starts_the_publisher_and_the_readers_only_read(
    module: list, resources: dict
) -> None:
    subs = _instances(module, "azurerm_eventgrid_system_topic_event_subscription", "blob_created")
    ours, theirs = subs["impact_to_publisher"], subs["reports_to_publisher"]
    assert _attr(ours, "subject_filter", "subject_begins_with") == (
        "/blobServices/default/containers/${azurerm_storage_container.impact.name}/blobs/"
    )
    for key in (
        "included_event_types",
        "storage_queue_endpoint",
        "delivery_identity",
        "dead_letter_identity",
    ):
        assert ours[key] == theirs[key], key
    for reader in ("notifier", "publisher"):
        grant = resources["azurerm_role_assignment"][f"{reader}_impact"]
        assert _attr(grant, "role_definition_name") == "Storage Blob Data Reader"
        assert _attr(grant, "scope") == "${azurerm_storage_container.impact.id}"
