# One user-assigned identity per component, so each holds only the rights it uses and the
# role assignments exist before the jobs start (no chicken-and-egg with system identities).

resource "azurerm_user_assigned_identity" "producer" {
  name                = "id-${var.name_prefix}-producer"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "worker" {
  name                = "id-${var.name_prefix}-worker"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "notifier" {
  name                = "id-${var.name_prefix}-notifier"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

# Event Grid delivers to the queue and dead-letters with this identity.
resource "azurerm_user_assigned_identity" "events" {
  name                = "id-${var.name_prefix}-events"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

# ---------------------------------------------------------------------------------------
# Worker: the only component that calls ARM, and only to read service tags.
# ---------------------------------------------------------------------------------------

resource "azurerm_role_definition" "service_tag_reader" {
  name        = "servicetags-watch service tag reader (${var.name_prefix})"
  scope       = data.azurerm_subscription.current.id
  description = "Read Azure service tags through the Service Tag Discovery API, nothing else."

  permissions {
    actions          = ["Microsoft.Network/locations/serviceTags/read"]
    not_actions      = []
    data_actions     = []
    not_data_actions = []
  }

  assignable_scopes = [data.azurerm_subscription.current.id]
}

# The API is a subscription-level action; there is no narrower scope it can be granted at.
resource "azurerm_role_assignment" "worker_service_tag_reader" {
  scope              = data.azurerm_subscription.current.id
  role_definition_id = azurerm_role_definition.service_tag_reader.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.worker.principal_id
  principal_type     = "ServicePrincipal"
}

# Contributor, not Message Processor: extending a message's visibility while a region is
# being checked is update_message, which needs queues/messages/write.
resource "azurerm_role_assignment" "worker_regions" {
  scope                = azurerm_storage_queue.regions.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
  principal_type       = "ServicePrincipal"
}

# The worker adds failed messages here (with the reason); the requeue command reads them back.
resource "azurerm_role_assignment" "worker_regions_poison" {
  scope                = azurerm_storage_queue.regions_poison.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "worker_snapshots" {
  scope                = azurerm_storage_container.snapshots.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "worker_reports" {
  scope                = azurerm_storage_container.reports.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# Producer: enqueue region messages; read snapshots to learn the known regions for "all".
# ---------------------------------------------------------------------------------------

resource "azurerm_role_assignment" "producer_regions" {
  scope                = azurerm_storage_queue.regions.id
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.producer.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "producer_snapshots" {
  scope                = azurerm_storage_container.snapshots.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.producer.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# Notifier: consume BlobCreated events, read reports, write create-only "sent" markers.
# ---------------------------------------------------------------------------------------

resource "azurerm_role_assignment" "notifier_change_events" {
  scope                = azurerm_storage_queue.change_events.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "notifier_change_events_poison" {
  scope                = azurerm_storage_queue.change_events_poison.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "notifier_reports" {
  scope                = azurerm_storage_container.reports.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "notifier_notifications" {
  scope                = azurerm_storage_container.notifications.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

# ACS Email with Entra ID: custom roles are reported not to be honoured by Communication
# Services, so the built-in role is granted on the one Communication Service only.
resource "azurerm_role_assignment" "notifier_email" {
  scope                = azurerm_communication_service.main.id
  role_definition_name = "Communication and Email Service Owner"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# Event Grid system topic: deliver to change-events, dead-letter into event-deadletter.
# ---------------------------------------------------------------------------------------

resource "azurerm_role_assignment" "events_change_events" {
  scope                = azurerm_storage_queue.change_events.id
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.events.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "events_deadletter" {
  scope                = azurerm_storage_container.event_deadletter.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.events.principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------
# Every job pulls its image with its own identity; nothing else touches the registry.
# ---------------------------------------------------------------------------------------

resource "azurerm_role_assignment" "acr_pull" {
  for_each = {
    producer = azurerm_user_assigned_identity.producer.principal_id
    worker   = azurerm_user_assigned_identity.worker.principal_id
    notifier = azurerm_user_assigned_identity.notifier.principal_id
  }

  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = each.value
  principal_type       = "ServicePrincipal"
}
