"""terraform/web.tf: the static website is on, and only the publisher writes $web and history."""

from __future__ import annotations

from typing import Any

import pytest

from tests.terraform.test_terraform import TF, _attr, _instances, _module, _resources


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, dict[str, Any]]]:
    return _resources(_module(TF))


def test_the_static_website_serves_index_html_from_web(resources):
    (site,) = resources["azurerm_storage_account_static_website"].values()
    assert _attr(site, "storage_account_id") == "${azurerm_storage_account.main.id}"
    assert _attr(site, "index_document") == "index.html"
    assert _attr(resources["azurerm_storage_container"]["web"], "name") == "$web"


def test_only_the_publisher_writes_web_and_history(resources):
    writers: dict[str, set[str]] = {}
    for body in resources["azurerm_role_assignment"].values():
        scope = _attr(body, "scope")
        for container in ("web", "history"):
            if scope == f"${{azurerm_storage_container.{container}.id}}":
                writers.setdefault(container, set()).add(
                    f"{_attr(body, 'role_definition_name')} {_attr(body, 'principal_id')}"
                )
    publisher = "${azurerm_user_assigned_identity.publisher.principal_id}"
    assert writers == {
        "web": {f"Storage Blob Data Contributor {publisher}"},
        "history": {f"Storage Blob Data Contributor {publisher}"},
    }


def test_the_publisher_job_runs_servicetags_publish_with_its_own_identity(resources):
    job = resources["azurerm_container_app_job"]["publisher"]
    assert _attr(job, "template", "container", "command") == ["servicetags", "publish", "--from-queue"]
    rule = _attr(job, "event_trigger_config", "scale", "rules")
    assert _attr(rule, "metadata")["queueName"] == "${azurerm_storage_queue.publish_events.name}"
    assert _attr(rule, "identity_id") == "${azurerm_user_assigned_identity.publisher.id}"
    assert _attr(job, "identity", "identity_ids") == ["${azurerm_user_assigned_identity.publisher.id}"]


def test_each_new_report_starts_the_publisher():
    sub = _instances(_module(TF), "azurerm_eventgrid_system_topic_event_subscription", "blob_created")[
        "reports_to_publisher"
    ]
    assert _attr(sub, "included_event_types") == ["Microsoft.Storage.BlobCreated"]
    assert _attr(sub, "subject_filter", "subject_begins_with") == (
        "/blobServices/default/containers/${azurerm_storage_container.reports.name}/blobs/"
    )
    endpoint = _attr(sub, "storage_queue_endpoint")
    assert _attr(endpoint, "queue_name") == "${azurerm_storage_queue.publish_events.name}"
    assert (
        _attr(sub, "delivery_identity", "user_assigned_identity")
        == "${azurerm_user_assigned_identity.events.id}"
    )
