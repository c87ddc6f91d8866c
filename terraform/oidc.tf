# GitHub Actions log in to Azure with OIDC: short-lived tokens bound to this repository, so
# no client secret exists anywhere. Two identities keep pull requests read-only:
#   - ci:     pull requests and pushes to main (terraform plan);
#   - deploy: only jobs running in the protected GitHub environment (apply, image push,
#             run now). When a job names an environment, its token subject is the
#             environment form instead of the ref form.

locals {
  github_repo_full = "${var.github_owner}/${var.github_repository}"
  github_issuer    = "https://token.actions.githubusercontent.com"
  github_audience  = ["api://AzureADTokenExchange"]

  ci_subjects = {
    main         = "repo:${local.github_repo_full}:ref:refs/heads/main"
    pull-request = "repo:${local.github_repo_full}:pull_request"
  }
}

resource "azurerm_user_assigned_identity" "github_ci" {
  name                = "id-${var.name_prefix}-github-ci"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "github_deploy" {
  name                = "id-${var.name_prefix}-github-deploy"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_federated_identity_credential" "github_ci" {
  for_each = local.ci_subjects

  name                      = "github-${each.key}"
  user_assigned_identity_id = azurerm_user_assigned_identity.github_ci.id
  issuer                    = local.github_issuer
  audience                  = local.github_audience
  subject                   = each.value
}

resource "azurerm_federated_identity_credential" "github_deploy" {
  name                      = "github-environment-${var.github_environment}"
  user_assigned_identity_id = azurerm_user_assigned_identity.github_deploy.id
  issuer                    = local.github_issuer
  audience                  = local.github_audience
  subject                   = "repo:${local.github_repo_full}:environment:${var.github_environment}"
}

# The build-push workflow pushes images; nothing else may.
resource "azurerm_role_assignment" "github_deploy_acr_push" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPush"
  principal_id         = azurerm_user_assigned_identity.github_deploy.principal_id
  principal_type       = "ServicePrincipal"
}

# "Run now" starts the producer job and may read it, nothing more.
resource "azurerm_role_definition" "job_starter" {
  name        = "servicetags-watch job starter (${var.name_prefix})"
  scope       = azurerm_resource_group.main.id
  description = "Start a Container Apps job and read its executions."

  permissions {
    actions = [
      "Microsoft.App/jobs/read",
      "Microsoft.App/jobs/start/action",
      "Microsoft.App/jobs/executions/read",
    ]
    not_actions      = []
    data_actions     = []
    not_data_actions = []
  }

  assignable_scopes = [azurerm_resource_group.main.id]
}

resource "azurerm_role_assignment" "github_deploy_start_producer" {
  scope              = azurerm_container_app_job.producer.id
  role_definition_id = azurerm_role_definition.job_starter.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.github_deploy.principal_id
  principal_type     = "ServicePrincipal"
}

# The rights Terraform itself needs in CI (read everything for plan; create resources,
# role definitions and assignments for apply) are granted once by an operator, as
# docs/deploy.md shows. This configuration never widens its own runner's rights.
#
# The GitHub side (environment, Actions variables) is the separate root module in
# terraform/github: the workflow token cannot manage repository variables or environments,
# and giving CI a GitHub token that can would be exactly the stored secret we avoid.
