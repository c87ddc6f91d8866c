# The environment name comes from the Azure module, where it is part of the deploy
# identity's federated-credential subject; the two can therefore never disagree.
resource "github_repository_environment" "production" {
  repository  = var.github_repository
  environment = local.azure.github_environment

  deployment_branch_policy {
    protected_branches     = false
    custom_branch_policies = true
  }
}

# Only main (terraform apply, run now) and version tags (image push) may deploy.
resource "github_repository_environment_deployment_policy" "main" {
  repository     = var.github_repository
  environment    = github_repository_environment.production.environment
  branch_pattern = "main"
}

resource "github_repository_environment_deployment_policy" "version_tags" {
  repository  = var.github_repository
  environment = github_repository_environment.production.environment
  tag_pattern = "v*.*.*"
}

# Identifiers only: variables, never secrets. None of these grants anything by itself.
resource "github_actions_variable" "settings" {
  for_each = {
    AZURE_CLIENT_ID         = local.azure.github_deploy_client_id
    AZURE_CI_CLIENT_ID      = local.azure.github_ci_client_id
    AZURE_TENANT_ID         = local.azure.tenant_id
    AZURE_SUBSCRIPTION_ID   = local.azure.subscription_id
    AZURE_RESOURCE_GROUP    = local.azure.resource_group_name
    ACR_NAME                = local.azure.registry_name
    ACR_LOGIN_SERVER        = local.azure.registry_login_server
    PRODUCER_JOB_NAME       = local.azure.producer_job_name
    DOCTOR_JOB_NAME         = local.azure.doctor_job_name
    TFSTATE_RESOURCE_GROUP  = var.state_backend.resource_group_name
    TFSTATE_STORAGE_ACCOUNT = var.state_backend.storage_account_name
    TFSTATE_CONTAINER       = var.state_backend.container_name
    TFSTATE_KEY             = var.state_backend.key
  }

  repository    = var.github_repository
  variable_name = each.key
  value         = each.value
}
