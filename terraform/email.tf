resource "azurerm_email_communication_service" "main" {
  name                = "ecs-${var.name_prefix}"
  resource_group_name = azurerm_resource_group.main.name
  data_location       = var.email_data_location
  tags                = local.tags
}

# An Azure-managed domain is pre-verified (<guid>.azurecomm.net): no DNS records to publish.
resource "azurerm_email_communication_service_domain" "azure_managed" {
  name              = "AzureManagedDomain"
  email_service_id  = azurerm_email_communication_service.main.id
  domain_management = "AzureManaged"
  tags              = local.tags
}

resource "azurerm_communication_service" "main" {
  name                = "acs-${var.name_prefix}-${local.suffix}"
  resource_group_name = azurerm_resource_group.main.name
  data_location       = var.email_data_location
  tags                = local.tags
}

resource "azurerm_communication_service_email_domain_association" "main" {
  communication_service_id = azurerm_communication_service.main.id
  email_service_domain_id  = azurerm_email_communication_service_domain.azure_managed.id
}
