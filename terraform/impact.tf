# The impact step: which of the user's NSGs, firewall rules, IP Groups, routes and network
# ACLs each new report touches. Its own identity reads rules through Azure Resource Graph
# with Reader on the configured scopes, and nothing else outside this deployment; its own
# queue is fed by a second Event Grid subscription on the same report events, so a Resource
# Graph failure never delays or loses a report. Its variables and output are declared here
# too, so the step is one file.

variable "impact_scopes" {
  type        = list(string)
  description = "Scopes whose rules the impact step reads with Reader: subscription ids (/subscriptions/<guid>) or management groups (/providers/Microsoft.Management/managementGroups/<name>). Empty: the deployment's subscription."
  default     = []

  validation {
    condition = alltrue([for s in var.impact_scopes : can(regex(
      "^(/subscriptions/[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|/providers/Microsoft\\.Management/managementGroups/[A-Za-z0-9_().-]{1,90})$", s
    ))])
    error_message = "impact_scopes holds /subscriptions/<guid> or /providers/Microsoft.Management/managementGroups/<name> ids."
  }
}

variable "impact_max_executions" {
  type        = number
  description = "Most impact job executions at once (one Resource Graph query per report)."
  default     = 2

  validation {
    condition     = contains(range(1, 11), var.impact_max_executions)
    error_message = "impact_max_executions must be between 1 and 10."
  }
}

locals {
  impact_scopes = coalescelist(var.impact_scopes, [data.azurerm_subscription.current.id])
  impact_subscriptions = [
    for s in local.impact_scopes : trimprefix(s, "/subscriptions/") if startswith(s, "/subscriptions/")
  ]
  impact_management_groups = [
    for s in local.impact_scopes : trimprefix(s, "/providers/Microsoft.Management/managementGroups/")
    if startswith(s, "/providers/Microsoft.Management/managementGroups/")
  ]

  impact_env = merge(local.common_env, {
    AZURE_CLIENT_ID                      = azurerm_user_assigned_identity.impact.client_id
    SERVICETAGS_CLOUD                    = var.cloud
    SERVICETAGS_RULES_SOURCE             = "resource-graph"
    SERVICETAGS_IMPACT_SUBSCRIPTIONS     = join(",", local.impact_subscriptions)
    SERVICETAGS_IMPACT_MANAGEMENT_GROUPS = join(",", local.impact_management_groups)
    SERVICETAGS_IMPACT_QUEUE             = azurerm_storage_queue.impact.name
    SERVICETAGS_IMPACT_CONTAINER         = azurerm_storage_container.impact.name
    SERVICETAGS_REPORTS_CONTAINER        = azurerm_storage_container.reports.name
    SERVICETAGS_SNAPSHOTS_CONTAINER      = azurerm_storage_container.snapshots.name
    SERVICETAGS_MAX_TRIES                = tostring(var.max_tries)
  })
}

resource "azurerm_user_assigned_identity" "impact" {
  name                = "id-${var.name_prefix}-impact"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

# Reader, and only Reader: Resource Graph returns only what the caller may read, and the
# rule collection groups of firewall policies are read through ARM with the same right.
resource "azurerm_role_assignment" "impact_reader" {
  for_each = toset(local.impact_scopes)

  scope                = each.value
  role_definition_name = "Reader"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# Storage: its own queue, poison queue and results container
# ---------------------------------------------------------------------------------------

resource "azurerm_storage_container" "impact" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "impact"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "impact" {
  name               = "impact"
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_queue" "impact_poison" {
  name               = "impact-poison"
  storage_account_id = azurerm_storage_account.main.id
}

# Contributor, not Message Processor: the lease is extended while a report is matched.
resource "azurerm_role_assignment" "impact_queue" {
  scope                = azurerm_storage_queue.impact.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "impact_queue_poison" {
  scope                = azurerm_storage_queue.impact_poison.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "impact_reports" {
  scope                = azurerm_storage_container.reports.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

# The report's new snapshot (named by content) tells which literal lists copy a tag.
resource "azurerm_role_assignment" "impact_snapshots" {
  scope                = azurerm_storage_container.snapshots.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "impact_results" {
  scope                = azurerm_storage_container.impact.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

# The notifier and the publisher read the impact documents into the digest, the channels and
# the report pages (impact/<report blob name>); they never wait for them or write them.
resource "azurerm_role_assignment" "notifier_impact" {
  scope                = azurerm_storage_container.impact.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "publisher_impact" {
  scope                = azurerm_storage_container.impact.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.publisher.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "impact_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.impact.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# Event Grid: the same report BlobCreated events, to the impact queue (the subscription is
# blob_created["reports_to_impact"] in eventgrid.tf)
# ---------------------------------------------------------------------------------------

resource "azurerm_role_assignment" "events_impact" {
  scope                = azurerm_storage_queue.impact.id
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.events.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# The job: scaled by KEDA on the impact queue, drains it, exits
# ---------------------------------------------------------------------------------------

resource "azurerm_container_app_job" "impact" {
  name                         = "job-${var.name_prefix}-impact"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  replica_timeout_in_seconds = 900
  # Retries are the queue's job (visibility timeout, then poison after max_tries).
  replica_retry_limit = 0

  event_trigger_config {
    parallelism              = 1
    replica_completion_count = 1

    scale {
      min_executions              = 0
      max_executions              = var.impact_max_executions
      polling_interval_in_seconds = 30

      rules {
        name             = "impact-queue"
        custom_rule_type = "azure-queue"
        identity_id      = azurerm_user_assigned_identity.impact.id
        metadata = {
          accountName = azurerm_storage_account.main.name
          queueName   = azurerm_storage_queue.impact.name
          queueLength = "1"
        }
      }
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.impact.id]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.impact.id
  }

  template {
    container {
      name    = "impact"
      image   = local.image
      command = ["servicetags", "impact-worker", "--until-empty"]
      cpu     = 0.5
      memory  = "1Gi"

      dynamic "env" {
        for_each = local.impact_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.impact_acr_pull,
    azurerm_role_assignment.impact_reader,
    azurerm_role_assignment.impact_queue,
    azurerm_role_assignment.impact_queue_poison,
    azurerm_role_assignment.impact_reports,
    azurerm_role_assignment.impact_snapshots,
    azurerm_role_assignment.impact_results,
  ]
}

output "impact_scopes" {
  description = "Scopes the impact step reads rules from, with Reader."
  value       = local.impact_scopes
}
