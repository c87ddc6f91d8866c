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


# Every subscription of the storage topic: the BlobCreated events of one container (names
# starting with the prefix, and for run markers ending with a suffix) to one queue of this
# account, in the Event Grid schema (the consumers read one JSON event per queue message).
locals {
  blob_created_subscriptions = {
    # New reports for the notifier; snapshots, markers and dead letters raise no work.
    reports_to_queue = {
      name      = "reports-created"
      container = azurerm_storage_container.reports.name
      ends_with = null
      queue     = azurerm_storage_queue.change_events.name
    }
    # The same report events for the impact step (impact.tf).
    reports_to_impact = {
      name      = "reports-created-impact"
      container = azurerm_storage_container.reports.name
      ends_with = null
      queue     = azurerm_storage_queue.impact.name
    }
    # The same report events for the publisher, so the web view follows within a minute (web.tf).
    reports_to_publisher = {
      name      = "reports-created-publish"
      container = azurerm_storage_container.reports.name
      ends_with = null
      queue     = azurerm_storage_queue.publish_events.name
    }
    # A new impact document makes the publisher run again, so the report's page shows it
    # (the page was usually published before the impact step had finished; impact.tf).
    impact_to_publisher = {
      name      = "impact-created-publish"
      container = azurerm_storage_container.impact.name
      ends_with = null
      queue     = azurerm_storage_queue.publish_events.name
    }
    # Only a run's complete marker, for its digest (digest.tf): manifests and region outcomes
    # raise no work.
    runs_complete_to_queue = {
      name      = "runs-complete"
      container = azurerm_storage_container.runs.name
      ends_with = "/complete.json"
      queue     = azurerm_storage_queue.change_events.name
    }
  }
}

resource "azurerm_eventgrid_system_topic_event_subscription" "blob_created" {
  for_each = local.blob_created_subscriptions

  name                = each.value.name
  system_topic        = azurerm_eventgrid_system_topic.storage.name
  resource_group_name = azurerm_resource_group.main.name

  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${each.value.container}/blobs/"
    subject_ends_with   = each.value.ends_with
    case_sensitive      = true
  }

  storage_queue_endpoint {
    storage_account_id = azurerm_storage_account.main.id
    queue_name         = each.value.queue
    # Seven days, the queue service's default for a message sent without a TTL: a default,
    # not a limit (-1 would mean never expire). Far longer than a consumer needs, and the
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

  # Event Grid validates the destination with the identity at creation time. (depends_on is
  # per resource, not per instance: each waits for every queue's grant.)
  depends_on = [
    azurerm_role_assignment.events_change_events,
    azurerm_role_assignment.events_impact,
    azurerm_role_assignment.events_publish_events,
    azurerm_role_assignment.events_deadletter,
  ]
}

# The four subscriptions were separate resources until they were folded into the map above:
# existing deployments keep them (no destroy and re-create, no lost events).
moved {
  from = azurerm_eventgrid_system_topic_event_subscription.impact_to_publisher
  to   = azurerm_eventgrid_system_topic_event_subscription.blob_created["impact_to_publisher"]
}

moved {
  from = azurerm_eventgrid_system_topic_event_subscription.reports_to_queue
  to   = azurerm_eventgrid_system_topic_event_subscription.blob_created["reports_to_queue"]
}

moved {
  from = azurerm_eventgrid_system_topic_event_subscription.reports_to_impact
  to   = azurerm_eventgrid_system_topic_event_subscription.blob_created["reports_to_impact"]
}

moved {
  from = azurerm_eventgrid_system_topic_event_subscription.reports_to_publisher
  to   = azurerm_eventgrid_system_topic_event_subscription.blob_created["reports_to_publisher"]
}

moved {
  from = azurerm_eventgrid_system_topic_event_subscription.runs_complete_to_queue
  to   = azurerm_eventgrid_system_topic_event_subscription.blob_created["runs_complete_to_queue"]
}
