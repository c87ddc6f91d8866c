output "resource_group_name" {
  description = "Resource group holding every resource of this deployment."
  value       = azurerm_resource_group.main.name
}

output "storage_account_name" {
  description = "Storage account with the snapshots, reports and notifications containers and the queues."
  value       = azurerm_storage_account.main.name
}

output "blob_endpoint" {
  description = "SERVICETAGS_BLOB_ENDPOINT for running a component (or the requeue command) against this deployment."
  value       = local.common_env.SERVICETAGS_BLOB_ENDPOINT
}

output "queue_endpoint" {
  description = "SERVICETAGS_QUEUE_ENDPOINT for running a component against this deployment."
  value       = local.common_env.SERVICETAGS_QUEUE_ENDPOINT
}

output "registry_login_server" {
  description = "Registry the image is pushed to: <login server>/servicetags-watch:<tag>."
  value       = azurerm_container_registry.main.login_server
}

output "image" {
  description = "Image the jobs run."
  value       = local.image
}

output "producer_job_name" {
  description = "Start a run now with: az containerapp job start -g <resource group> -n <this>."
  value       = azurerm_container_app_job.producer.name
}

output "worker_job_name" {
  description = "Worker job (started by KEDA from the regions queue)."
  value       = azurerm_container_app_job.worker.name
}

output "notifier_job_name" {
  description = "Notifier job (started by KEDA from the change-events queue)."
  value       = azurerm_container_app_job.notifier.name
}

output "log_analytics_workspace_id" {
  description = "Workspace GUID for az monitor log-analytics query."
  value       = azurerm_log_analytics_workspace.main.workspace_id
}

output "mail_from" {
  description = "Sender address of the change e-mails (Azure-managed domain)."
  value       = local.notifier_env.SERVICETAGS_MAIL_FROM
}

output "tenant_id" {
  description = "Entra tenant the workflows log in to."
  value       = data.azurerm_client_config.current.tenant_id
}

output "subscription_id" {
  description = "Subscription of this deployment."
  value       = var.subscription_id
}

output "registry_name" {
  description = "Registry name for az acr login."
  value       = azurerm_container_registry.main.name
}

output "github_ci_client_id" {
  description = "Client id of the read-only identity the plan jobs use (AZURE_CI_CLIENT_ID)."
  value       = azurerm_user_assigned_identity.github_ci.client_id
}

output "github_environment" {
  description = "GitHub environment named in the deploy identity's federated credential."
  value       = var.github_environment
}

output "github_deploy_client_id" {
  description = "Client id of the identity the deploy workflows use (also set as the AZURE_CLIENT_ID variable)."
  value       = azurerm_user_assigned_identity.github_deploy.client_id
}

output "github_deploy_principal_id" {
  description = "Object id to grant Terraform's own rights to (see docs/deploy.md)."
  value       = azurerm_user_assigned_identity.github_deploy.principal_id
}

output "github_ci_principal_id" {
  description = "Object id of the read-only plan identity (see docs/deploy.md)."
  value       = azurerm_user_assigned_identity.github_ci.principal_id
}
