# Run digests: the producer records each run's regions under `runs` and enqueues a deadline
# message (visible only when the run's time is up) on `run-deadlines`; workers record each
# region's outcome and, for the last one, a create-only `complete.json`, whose BlobCreated
# event reaches the notifier through change-events like a report's (the subscription is
# blob_created["runs_complete_to_queue"] in eventgrid.tf).

resource "azurerm_storage_container" "runs" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "runs"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "run_deadlines" {
  name               = "run-deadlines"
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_queue" "run_deadlines_poison" {
  name               = "run-deadlines-poison"
  storage_account_id = azurerm_storage_account.main.id
}

# The producer writes the run's manifest (create-only) and enqueues its deadline.
resource "azurerm_role_assignment" "producer_runs" {
  scope                = azurerm_storage_container.runs.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.producer.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "producer_run_deadlines" {
  scope                = azurerm_storage_queue.run_deadlines.id
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.producer.principal_id
  principal_type       = "ServicePrincipal"
}

# Workers record region outcomes and the complete marker.
resource "azurerm_role_assignment" "worker_runs" {
  scope                = azurerm_storage_container.runs.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
  principal_type       = "ServicePrincipal"
}

# The notifier reads runs and consumes deadlines (poisoning what it cannot use).
resource "azurerm_role_assignment" "notifier_runs" {
  scope                = azurerm_storage_container.runs.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "notifier_run_deadlines" {
  scope                = azurerm_storage_queue.run_deadlines.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "notifier_run_deadlines_poison" {
  scope                = azurerm_storage_queue.run_deadlines_poison.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

variable "digest_deadline_seconds" {
  type        = number
  description = "Seconds after a run starts when its digest goes out even if some regions are still being checked (naming them). At most 604800 (7 days, the longest a queue message can be delayed)."
  default     = 3600

  validation {
    # Whole seconds, 1 to 604800 (written with functions: see the note in versions.tf).
    condition     = alltrue([can(regex("^[1-9][0-9]{0,5}$", tostring(var.digest_deadline_seconds))), contains([604800], max(var.digest_deadline_seconds, 604800))])
    error_message = "digest_deadline_seconds must be a whole number from 1 to 604800."
  }
}
