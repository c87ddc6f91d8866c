resource "azurerm_storage_account" "main" {
  #checkov:skip=CKV_AZURE_59:Container Apps jobs on the consumption plan and the Event Grid system topic reach the account over its public endpoint; every request still needs an Entra ID token because shared keys are off.
  #checkov:skip=CKV_AZURE_35:No virtual network exists to allow; a default-deny firewall would block the jobs and Event Grid delivery with a user-assigned identity. Access is by Entra ID only.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a virtual network and private DNS, which this small deployment deliberately does not create.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys are adequate for public IP-range data; a customer-managed key would add a Key Vault to operate.
  #checkov:skip=CKV_AZURE_33:Queue logging is sent to Log Analytics by azurerm_monitor_diagnostic_setting.queue (classic Storage Analytics logging would need shared keys); checkov only recognises the classic setting.
  #checkov:skip=CKV_AZURE_206:Snapshots and reports are reproducible from Microsoft's published data, so locally redundant storage is the cost-appropriate choice.
  name                = local.storage_account_name
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location

  account_kind             = "StorageV2" # BlobCreated events need StorageV2
  account_tier             = "Standard"
  account_replication_type = "LRS"

  shared_access_key_enabled        = false
  default_to_oauth_authentication  = true
  min_tls_version                  = "TLS1_2"
  https_traffic_only_enabled       = true
  allow_nested_items_to_be_public  = false
  local_user_enabled               = false
  cross_tenant_replication_enabled = false

  blob_properties {
    # Reports are immutable history; soft delete guards them against an accidental delete.
    delete_retention_policy {
      days = 14
    }
    container_delete_retention_policy {
      days = 14
    }
  }

  # No SAS is ever issued (shared keys are off); this only bounds one if that changes.
  sas_policy {
    expiration_period = "00.01:00:00"
  }

  tags = local.tags
}

resource "azurerm_storage_container" "snapshots" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "snapshots"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "reports" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "reports"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

# Create-only "sent" markers, one per report and recipient, so a redelivered event never
# sends twice. Kept apart from reports so the notifier needs only read access there.
resource "azurerm_storage_container" "notifications" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "notifications"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

# Where Event Grid puts events it could not deliver to the change-events queue.
resource "azurerm_storage_container" "event_deadletter" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to Log Analytics through azurerm_monitor_diagnostic_setting.blob; the storage-insights resource this check wants needs an account key, and shared keys are off.
  name                  = "event-deadletter"
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "regions" {
  name               = "regions"
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_queue" "regions_poison" {
  name               = "regions-poison"
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_queue" "change_events" {
  name               = "change-events"
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_queue" "change_events_poison" {
  name               = "change-events-poison"
  storage_account_id = azurerm_storage_account.main.id
}

# Storage logs go to the same workspace as the jobs, through ARM, so no shared key is needed.
resource "azurerm_monitor_diagnostic_setting" "queue" {
  name                       = "queue-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.main.id}/queueServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category_group = "allLogs"
  }
}

resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "blob-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.main.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category_group = "allLogs"
  }
}
