"""The doctor's judgements (pure): what an answer means and which fix it names."""

from __future__ import annotations

from datetime import UTC, datetime

from servicetags.doctor import (
    Check,
    Target,
    channel_secret_checks,
    event_subscription_checks,
    freshness_checks,
    line,
    storage_failure,
)

ACCOUNT_ID = (
    "/subscriptions/s/resourceGroups/rg-stwatch/providers/Microsoft.Storage/storageAccounts/stwatchab12cd"
)


def _subscription(queue: str = "change-events", account_id: str = ACCOUNT_ID) -> dict:
    """An ARM GET of a system topic event subscription delivering with the topic's identity
    (the shape azurerm creates for delivery_identity + storage_queue_endpoint)."""
    return {
        "id": "/subscriptions/s/resourceGroups/rg-stwatch/providers/Microsoft.EventGrid/systemTopics/"
        "egst-stwatch-storage/eventSubscriptions/reports-created",
        "name": "reports-created",
        "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions",
        "properties": {
            "provisioningState": "Succeeded",
            "deliveryWithResourceIdentity": {
                "identity": {"type": "UserAssigned", "userAssignedIdentity": "/subscriptions/s/id-events"},
                "destination": {
                    "endpointType": "StorageQueue",
                    "properties": {
                        "resourceId": account_id,
                        "queueName": queue,
                        "queueMessageTimeToLiveInSeconds": 604800,
                    },
                },
            },
            "filter": {
                "subjectBeginsWith": "/blobServices/default/containers/reports/blobs/",
                "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
                "isSubjectCaseSensitive": True,
            },
            "eventDeliverySchema": "EventGridSchema",
        },
    }


def test_a_subscription_delivering_report_creations_to_the_queue_passes() -> None:
    checks = event_subscription_checks(
        _subscription(), queue="change-events", account="stwatchab12cd", container="reports"
    )
    assert checks == [
        Check("OK", "events: Event Grid subscription", "BlobCreated in 'reports' -> queue 'change-events'")
    ]


def test_a_subscription_to_another_queue_or_account_fails_with_the_fix() -> None:
    (wrong_queue,) = event_subscription_checks(
        _subscription(queue="events"), queue="change-events", account="stwatchab12cd", container="reports"
    )
    assert line(wrong_queue) == (
        "FAIL events: Event Grid subscription: delivers to queue 'events', not "
        "'change-events'; fix: terraform apply (terraform/eventgrid.tf)"
    )
    (wrong_account,) = event_subscription_checks(
        _subscription(account_id="/x/storageAccounts/other"),
        queue="change-events",
        account="stwatchab12cd",
        container="reports",
    )
    assert "delivers to another account (/x/storageAccounts/other)" in wrong_account.detail


def test_freshness_names_regions_never_checked_and_stale_ones() -> None:
    now = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)
    states = {"westeurope": "2025-03-02T06:00:00+00:00", "global": "2025-02-27T06:00:00+00:00"}
    (check,) = freshness_checks(states, ["westeurope", "global", "japaneast"], now, 30)
    assert check.status == "FAIL"
    assert check.detail.startswith(
        "never checked: japaneast; older than 30 h: global (last 2025-02-27T06:00:00+00:00); fix: start a run"
    )
    assert freshness_checks(states, ["westeurope"], now, 30) == [
        Check("OK", "regions: checked recently", "1 regions within 30 h")
    ]
    assert freshness_checks({}, None, now, 30)[0].detail.startswith("no region has been checked yet")


def test_a_403_names_the_role_the_scope_and_the_command() -> None:
    target = Target("notifier", "container", "notifications", "Storage Blob Data Contributor", local=False)
    text = storage_failure(target, 403, "AuthorizationPermissionMismatch")
    assert text == (
        "the notifier identity lacks 'Storage Blob Data Contributor' on container 'notifications' "
        "(AuthorizationPermissionMismatch); fix: terraform apply (terraform/identity.tf grants it), or "
        "az role assignment create --role 'Storage Blob Data Contributor' --assignee-object-id <notifier "
        "principal id> --assignee-principal-type ServicePrincipal --scope <storage account "
        "id>/blobServices/default/containers/notifications"
    )


def test_channel_secrets_are_checked_by_name_and_never_shown(tmp_path) -> None:
    channels = (
        '[{"name": "noc", "type": "teams", "url_secret": "teams-noc-url"},'
        ' {"name": "cmdb", "type": "webhook", "url_secret": "cmdb-url",'
        '  "signing_secrets": ["cmdb-signing"]}]'
    )
    (tmp_path / "cmdb-url").write_text("https://cmdb.example/hook?sig=SECRET-IN-FILE\n")
    environ = {
        "SERVICETAGS_CHANNELS": channels,
        "SERVICETAGS_SECRETS_DIR": str(tmp_path),
        "SERVICETAGS_SECRET_TEAMS_NOC_URL": "https://example.webhook.office.com/SECRET-IN-ENV",
    }
    lines = [line(c) for c in channel_secret_checks(environ, None)]
    assert lines == [
        "OK   notifier: channel teams:noc: secret teams-noc-url: readable (value not shown)",
        "OK   notifier: channel webhook:cmdb: secret cmdb-url: readable (value not shown)",
        "FAIL notifier: channel webhook:cmdb: secret cmdb-signing: secret 'cmdb-signing' not found: set "
        f"SERVICETAGS_SECRET_CMDB_SIGNING or {tmp_path / 'cmdb-signing'}; fix: set the secret",
    ]
    assert not any("SECRET-IN" in text for text in lines)
    assert channel_secret_checks({}, None) == []
