# The Terraform state holds secrets: azurerm_communication_service keeps the Communication
# Service's access keys and connection strings in it (sensitive, but in clear text in the
# blob), and no 4.x argument turns ACS key auth off. The state container is therefore readable
# by the plan identity and writable by the deploy identity, and by nobody else this
# configuration knows of. The state account itself is made by hand (docs/deploy.md, step 1),
# so only these two grants are Terraform's; the rest of its lock-down is in that step.

variable "tfstate_container_id" {
  type        = string
  description = "ARM id of the state container (<state account id>/blobServices/default/containers/tfstate). Empty: grant nothing on it here."
  default     = ""

  validation {
    condition     = can(regex("^$|^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.Storage/storageAccounts/[^/]+/blobServices/default/containers/[^/]+$", var.tfstate_container_id))
    error_message = "tfstate_container_id must be a container's ARM id: .../storageAccounts/<name>/blobServices/default/containers/<container>."
  }
}

locals {
  # A set of zero or one id: no grant when the variable is empty (written without == because
  # of the operator note in versions.tf).
  tfstate_containers = toset(compact([var.tfstate_container_id]))
}

# terraform plan (pull requests and main) reads the state, never leases or writes it.
resource "azurerm_role_assignment" "github_ci_state" {
  for_each = local.tfstate_containers

  scope                = each.value
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.github_ci.principal_id
  principal_type       = "ServicePrincipal"
}

# terraform apply (the protected environment) writes the state and takes its lease.
resource "azurerm_role_assignment" "github_deploy_state" {
  for_each = local.tfstate_containers

  scope                = each.value
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.github_deploy.principal_id
  principal_type       = "ServicePrincipal"
}
