# Only one system topic may exist per storage account; if Defender for Storage malware
# scanning already owns it, import that topic instead of creating this one.
resource "azurerm_eventgrid_system_topic" "storage" {
  name                = "egst-${var.name_prefix}-storage"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  source_resource_id  = azurerm_storage_account.main.id
  topic_type          = "Microsoft.Storage.StorageAccounts"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.events.id]
  }

  tags = local.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "reports_to_queue" {
  name                = "reports-created"
  system_topic        = azurerm_eventgrid_system_topic.storage.name
  resource_group_name = azurerm_resource_group.main.name

  # The notifier reads Event Grid schema events (a JSON object per queue message).
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  # Only new report blobs matter; snapshots, markers and dead letters raise no work.
  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${azurerm_storage_container.reports.name}/blobs/"
    case_sensitive      = true
  }

  storage_queue_endpoint {
    storage_account_id = azurerm_storage_account.main.id
    queue_name         = azurerm_storage_queue.change_events.name
    # Seven days, the queue service's default for a message sent without a TTL: a default,
    # not a limit (-1 would mean never expire). Far longer than the notifier needs, and the
    # poison/failed-run alert fires long before an event could expire unread.
    queue_message_time_to_live_in_seconds = 604800
  }

  delivery_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.events.id
  }

  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.main.id
    storage_blob_container_name = azurerm_storage_container.event_deadletter.name
  }

  dead_letter_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.events.id
  }

  # Event Grid validates the destination with the identity at creation time.
  depends_on = [
    azurerm_role_assignment.events_change_events,
    azurerm_role_assignment.events_deadletter,
  ]
}
