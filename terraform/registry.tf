resource "azurerm_container_registry" "main" {
  #checkov:skip=CKV_AZURE_139:Public network access needs the Premium SKU to turn off; pulls and pushes are authenticated with Entra ID (admin user off).
  #checkov:skip=CKV_AZURE_163:Defender for Containers image scanning is a subscription-level plan the operator chooses; it is not switched on per registry.
  #checkov:skip=CKV_AZURE_164:Content trust needs the Premium SKU; images are pushed only by the OIDC-authenticated build workflow.
  #checkov:skip=CKV_AZURE_165:Geo-replication needs the Premium SKU and a second region; one image in one region is enough for daily jobs.
  #checkov:skip=CKV_AZURE_166:Quarantine needs the Premium SKU and an external scanner.
  #checkov:skip=CKV_AZURE_167:Retention of untagged manifests needs the Premium SKU; every push here is tagged with a version.
  #checkov:skip=CKV_AZURE_233:Zone redundancy needs the Premium SKU; a registry outage delays a daily run, nothing more.
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints need the Premium SKU and only matter behind a firewall.
  name                = local.registry_name
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "Basic"
  # Jobs pull with their managed identity and CI pushes with OIDC: no registry password exists.
  admin_enabled = false
  tags          = local.tags
}
