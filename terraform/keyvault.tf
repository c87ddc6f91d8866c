# Channel credentials (Teams and Slack webhook URLs, signing secrets of signed webhooks) live
# in this vault. The notifier reads them with its own identity, holding Key Vault Secrets
# User on this vault only; Terraform never sees the values (they would land in its state):
# an operator sets them with `az keyvault secret set --vault-name <vault> --name <name>`.

locals {
  # 3-24 characters, globally unique: the same stable suffix as the storage account.
  key_vault_name = "kv-${var.name_prefix}-${local.suffix}"

  # SERVICETAGS_CHANNELS: names of secrets only, checked against the names declared here so
  # a typo fails the plan instead of the notifier's start.
  channels_json = jsonencode([
    for c in var.notification_channels : { for k, v in c : k => v if can(length(v)) }
  ])
}

resource "azurerm_key_vault" "channels" {
  #checkov:skip=CKV_AZURE_109:The notifier runs in a Container Apps environment without a virtual network, so the vault accepts public network traffic; every data-plane call still needs an Entra ID token and an RBAC role.
  #checkov:skip=CKV_AZURE_189:Public network access is needed for the same reason as the network ACL above: the notifier has no private endpoint to reach the vault through.
  #checkov:skip=CKV2_AZURE_32:A private endpoint needs a virtual network the deployment does not have; access is limited by Entra ID and one role assignment instead.
  name                = local.key_vault_name
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tenant_id           = data.azurerm_client_config.current.tenant_id
  sku_name            = "standard"

  # Azure RBAC, not access policies: the one role assignment below is the whole grant.
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 30

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }

  tags = local.tags

  lifecycle {
    # A channel naming a secret nobody will set fails the plan, not the notifier's start.
    precondition {
      condition = alltrue([for c in var.notification_channels : alltrue([
        for n in concat([c.url_secret], coalesce(c.signing_secrets, [])) : contains(var.channel_credential_names, n)
      ])])
      error_message = "every secret a channel names must be listed in channel_credential_names."
    }
  }
}

resource "azurerm_role_assignment" "notifier_keyvault_secrets" {
  scope                = azurerm_key_vault.channels.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.notifier.principal_id
  principal_type       = "ServicePrincipal"
}

variable "channel_credential_names" {
  type        = list(string)
  description = "Names (not values) of the Key Vault secrets holding channel webhook URLs and signing keys; the values are set outside Terraform. notification_channels may only name these."
  default     = []

  validation {
    condition     = alltrue([for n in var.channel_credential_names : can(regex("^[A-Za-z0-9-]{1,127}$", n))])
    error_message = "channel_credential_names must be Key Vault secret names: 1-127 letters, digits and dashes."
  }
}

variable "notification_channels" {
  type = list(object({
    name            = string
    type            = string
    url_secret      = string
    signing_secrets = optional(list(string))
    delivery        = optional(string)
    regions         = optional(list(string))
    tags            = optional(list(string))
    services        = optional(list(string))
    min_addresses   = optional(number)
    family          = optional(string)
  }))
  description = "Teams, Slack and signed-webhook channels (SERVICETAGS_CHANNELS), naming their secrets in the vault, never their values."
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : contains(["teams", "slack", "webhook"], c.type)])
    error_message = "each channel's type must be teams, slack or webhook."
  }

}

output "channels_vault_uri" {
  description = "The vault holding channel secrets: set each of channel_credential_names with az keyvault secret set."
  value       = azurerm_key_vault.channels.vault_uri
}
