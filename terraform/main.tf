data "azurerm_subscription" "current" {}

data "azurerm_client_config" "current" {}

locals {
  # Storage account and registry names are global and alphanumeric only; a suffix derived
  # from the subscription keeps them stable across applies without a random provider.
  suffix = substr(sha1("${var.subscription_id}/${var.name_prefix}"), 0, 6)

  storage_account_name = "${var.name_prefix}${local.suffix}"
  registry_name        = "${var.name_prefix}${local.suffix}acr"

  image = "${azurerm_container_registry.main.login_server}/servicetags-watch:${var.image_tag}"

  tags = merge({ application = "servicetags-watch" }, var.tags)

  # SERVICETAGS_RECIPIENTS is JSON; keys left unset in the variable are dropped instead of
  # being sent as null, so "no filter" means the key is absent. can(length(v)) is false only
  # for null (written without != because of the operator note in versions.tf).
  recipients_json = jsonencode([
    for r in var.recipients : { for k, v in r : k => v if can(length(v)) }
  ])
}

resource "azurerm_resource_group" "main" {
  name     = "rg-${var.name_prefix}"
  location = var.location
  tags     = local.tags
}
