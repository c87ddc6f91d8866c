# The history and its web view: the history container (index and change ledger), the
# account's static website ($web) and the job that keeps both current, started by the
# BlobCreated event of each new report.
#
# Only the publisher's identity may write $web and history (Storage Blob Data Contributor on
# each container, nothing wider); it reads snapshots and reports. With shared keys off the
# provider reads and writes the static-website properties over the blob data plane with
# Entra ID (storage_use_azuread in main.tf): whoever runs `terraform apply` needs a data role
# on the account (docs/deploy.md), as for the containers.

# Report events for the publisher: a second subscription to the same BlobCreated events
# (blob_created["reports_to_publisher"] in eventgrid.tf), so the web view is brought up to
# date within a minute of each new report.
resource "azurerm_storage_queue" "publish_events" {
  name               = "publish-events"
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_role_assignment" "events_publish_events" {
  scope                = azurerm_storage_queue.publish_events.id
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.events.principal_id
  principal_type       = "ServicePrincipal"
}

# The index (history/<cloud>/index.bin) and the change ledger (history/<cloud>/changes/).
resource "azurerm_storage_container" "history" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "history"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

# Declared before the static website is switched on (which would create it), so the
# publisher's role can be scoped to this one container. The site is served by the static
# website endpoint, not by anonymous blob access: the container stays private.
resource "azurerm_storage_container" "web" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "$web"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_account_static_website" "main" {
  storage_account_id = azurerm_storage_account.main.id
  index_document     = "index.html"
  error_404_document = "404.html"

  depends_on = [azurerm_storage_container.web]
}

resource "azurerm_user_assigned_identity" "publisher" {
  name                = "id-${var.name_prefix}-publisher"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_role_assignment" "publisher_web" {
  scope                = azurerm_storage_container.web.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "publisher_history" {
  scope                = azurerm_storage_container.history.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "publisher_snapshots" {
  scope                = azurerm_storage_container.snapshots.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "publisher_reports" {
  scope                = azurerm_storage_container.reports.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "publisher_publish_events" {
  scope                = azurerm_storage_queue.publish_events.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "publisher_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

locals {
  publisher_env = merge(local.common_env, {
    AZURE_CLIENT_ID                 = azurerm_user_assigned_identity.publisher.client_id
    SERVICETAGS_CLOUD               = var.cloud
    SERVICETAGS_SNAPSHOTS_CONTAINER = azurerm_storage_container.snapshots.name
    SERVICETAGS_REPORTS_CONTAINER   = azurerm_storage_container.reports.name
    SERVICETAGS_HISTORY_CONTAINER   = azurerm_storage_container.history.name
    SERVICETAGS_WEB_CONTAINER       = azurerm_storage_container.web.name
    SERVICETAGS_WEB_BASE_URL        = azurerm_storage_account.main.primary_web_endpoint
    SERVICETAGS_PUBLISH_QUEUE       = azurerm_storage_queue.publish_events.name
  })
}

resource "azurerm_container_app_job" "publisher" {
  name                         = "job-${var.name_prefix}-publisher"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  replica_timeout_in_seconds = 900
  # Publishing is idempotent (the index moves under an ETag, pages are written when they
  # differ), so a retried or overlapping run is harmless; events it did not finish with
  # come back to the queue and start the next run.
  replica_retry_limit = 0

  event_trigger_config {
    parallelism              = 1
    replica_completion_count = 1

    scale {
      min_executions = 0
      # One run takes every waiting event: a burst of 60 region reports is one publish.
      max_executions              = 1
      polling_interval_in_seconds = 30

      rules {
        name             = "publish-events-queue"
        custom_rule_type = "azure-queue"
        identity_id      = azurerm_user_assigned_identity.publisher.id
        metadata = {
          accountName = azurerm_storage_account.main.name
          queueName   = azurerm_storage_queue.publish_events.name
          queueLength = "1"
        }
      }
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.publisher.id]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.publisher.id
  }

  template {
    container {
      name    = "publisher"
      image   = local.image
      command = ["servicetags", "publish", "--from-queue"]
      cpu     = 0.5
      memory  = "1Gi"

      dynamic "env" {
        for_each = local.publisher_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.publisher_acr_pull,
    azurerm_role_assignment.publisher_web,
    azurerm_role_assignment.publisher_history,
    azurerm_role_assignment.publisher_snapshots,
    azurerm_role_assignment.publisher_reports,
    azurerm_role_assignment.publisher_publish_events,
  ]
}

output "web_endpoint" {
  description = "The static website: <endpoint>/<cloud>/index.html, lookup.html, feed.atom."
  value       = azurerm_storage_account.main.primary_web_endpoint
}

output "publisher_job_name" {
  value = azurerm_container_app_job.publisher.name
}
