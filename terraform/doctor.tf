# `servicetags doctor` as a one-off (manually started) job: each check runs with the identity
# of the component it is about, so the job carries the three component identities and is told
# which client id is whose. It pulls its image with the producer's identity (AcrPull).

locals {
  doctor_env = merge(local.common_env, {
    SERVICETAGS_PRODUCER_CLIENT_ID      = azurerm_user_assigned_identity.producer.client_id
    SERVICETAGS_WORKER_CLIENT_ID        = azurerm_user_assigned_identity.worker.client_id
    SERVICETAGS_NOTIFIER_CLIENT_ID      = azurerm_user_assigned_identity.notifier.client_id
    AZURE_SUBSCRIPTION_ID               = var.subscription_id
    SERVICETAGS_CLOUD                   = var.cloud
    SERVICETAGS_REGIONS                 = var.regions
    SERVICETAGS_REGIONS_QUEUE           = azurerm_storage_queue.regions.name
    SERVICETAGS_EVENTS_QUEUE            = azurerm_storage_queue.change_events.name
    SERVICETAGS_SNAPSHOTS_CONTAINER     = azurerm_storage_container.snapshots.name
    SERVICETAGS_REPORTS_CONTAINER       = azurerm_storage_container.reports.name
    SERVICETAGS_NOTIFICATIONS_CONTAINER = azurerm_storage_container.notifications.name
    SERVICETAGS_MAIL_BACKEND            = "acs"
    SERVICETAGS_ACS_ENDPOINT            = "https://${azurerm_communication_service.main.hostname}"
    SERVICETAGS_EVENT_SUBSCRIPTION_ID   = azurerm_eventgrid_system_topic_event_subscription.blob_created["reports_to_queue"].id
    SERVICETAGS_STALENESS_HOURS         = tostring(var.staleness_hours)
    # The channels' secrets are read as the notifier reads them (its identity, this vault).
    SERVICETAGS_CHANNELS     = local.channels_json
    SERVICETAGS_KEYVAULT_URL = azurerm_key_vault.channels.vault_uri
  })
}

resource "azurerm_container_app_job" "doctor" {
  name                         = "job-${var.name_prefix}-doctor"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  replica_timeout_in_seconds = 300
  # A failed check is the answer, not a reason to run again.
  replica_retry_limit = 0

  manual_trigger_config {
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type = "UserAssigned"
    identity_ids = [
      azurerm_user_assigned_identity.producer.id,
      azurerm_user_assigned_identity.worker.id,
      azurerm_user_assigned_identity.notifier.id,
    ]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.producer.id
  }

  template {
    container {
      name    = "doctor"
      image   = local.image
      command = ["servicetags", "doctor"]
      cpu     = 0.25
      memory  = "0.5Gi"

      dynamic "env" {
        for_each = local.doctor_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  tags = local.tags

  depends_on = [azurerm_role_assignment.acr_pull]
}

# The doctor confirms that the subscription exists and still targets change-events; reading
# it is the notifier's (it consumes those events), on this one topic, and nothing more.
resource "azurerm_role_assignment" "notifier_event_subscription_reader" {
  scope                = azurerm_eventgrid_system_topic.storage.id
  role_definition_name = "EventGrid EventSubscription Reader"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

# "Run now" may also start the doctor (read, start, nothing more).
resource "azurerm_role_assignment" "github_deploy_start_doctor" {
  scope              = azurerm_container_app_job.doctor.id
  role_definition_id = azurerm_role_definition.job_starter.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.github_deploy.principal_id
  principal_type     = "ServicePrincipal"
}

output "doctor_job_name" {
  description = "Check every component's access: az containerapp job start -g <resource group> -n <this>."
  value       = azurerm_container_app_job.doctor.name
}
