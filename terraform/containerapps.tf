resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${var.name_prefix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

resource "azurerm_container_app_environment" "main" {
  name                       = "cae-${var.name_prefix}"
  resource_group_name        = azurerm_resource_group.main.name
  location                   = azurerm_resource_group.main.location
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  # Console output lands in ContainerAppConsoleLogs_CL, which the alerts query.
  logs_destination = "log-analytics"
  tags             = local.tags
}

locals {
  # Every component reads storage through these endpoints with its own managed identity.
  common_env = {
    SERVICETAGS_BLOB_ENDPOINT  = trimsuffix(azurerm_storage_account.main.primary_blob_endpoint, "/")
    SERVICETAGS_QUEUE_ENDPOINT = trimsuffix(azurerm_storage_account.main.primary_queue_endpoint, "/")
    SERVICETAGS_LOG_FORMAT     = "json"
  }

  producer_env = merge(local.common_env, {
    AZURE_CLIENT_ID                 = azurerm_user_assigned_identity.producer.client_id
    SERVICETAGS_CLOUD               = var.cloud
    SERVICETAGS_REGIONS             = var.regions
    SERVICETAGS_REGIONS_QUEUE       = azurerm_storage_queue.regions.name
    SERVICETAGS_SNAPSHOTS_CONTAINER = azurerm_storage_container.snapshots.name
    SERVICETAGS_RUNS_CONTAINER      = azurerm_storage_container.runs.name
    SERVICETAGS_DEADLINES_QUEUE     = azurerm_storage_queue.run_deadlines.name
    SERVICETAGS_DIGEST_DEADLINE     = tostring(var.digest_deadline_seconds)
  })

  worker_env = merge(local.common_env, {
    AZURE_CLIENT_ID                 = azurerm_user_assigned_identity.worker.client_id
    AZURE_SUBSCRIPTION_ID           = var.subscription_id
    SERVICETAGS_SOURCE              = var.worker_source
    SERVICETAGS_OBSERVED_SOURCE     = var.worker_observed_source
    SERVICETAGS_REGIONS_QUEUE       = azurerm_storage_queue.regions.name
    SERVICETAGS_SNAPSHOTS_CONTAINER = azurerm_storage_container.snapshots.name
    SERVICETAGS_REPORTS_CONTAINER   = azurerm_storage_container.reports.name
    SERVICETAGS_MAX_TRIES           = tostring(var.max_tries)
    SERVICETAGS_RUNS_CONTAINER      = azurerm_storage_container.runs.name
  })

  notifier_env = merge(local.common_env, {
    AZURE_CLIENT_ID                     = azurerm_user_assigned_identity.notifier.client_id
    SERVICETAGS_EVENTS_QUEUE            = azurerm_storage_queue.change_events.name
    SERVICETAGS_REPORTS_CONTAINER       = azurerm_storage_container.reports.name
    SERVICETAGS_NOTIFICATIONS_CONTAINER = azurerm_storage_container.notifications.name
    SERVICETAGS_MAX_TRIES               = tostring(var.max_tries)
    SERVICETAGS_MAIL_BACKEND            = "acs"
    SERVICETAGS_ACS_ENDPOINT            = "https://${azurerm_communication_service.main.hostname}"
    SERVICETAGS_MAIL_FROM               = "DoNotReply@${azurerm_email_communication_service_domain.azure_managed.from_sender_domain}"
    SERVICETAGS_RECIPIENTS              = local.recipients_json
    SERVICETAGS_RUNS_CONTAINER          = azurerm_storage_container.runs.name
    SERVICETAGS_DEADLINES_QUEUE         = azurerm_storage_queue.run_deadlines.name
    SERVICETAGS_CHANNELS                = local.channels_json
    SERVICETAGS_KEYVAULT_URL            = azurerm_key_vault.channels.vault_uri
  })
}

resource "azurerm_container_app_job" "producer" {
  name                         = "job-${var.name_prefix}-producer"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  replica_timeout_in_seconds = 300
  # Enqueueing is idempotent per run id, so a retry of a failed replica is harmless.
  replica_retry_limit = 1

  schedule_trigger_config {
    cron_expression          = var.producer_cron
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.producer.id]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.producer.id
  }

  template {
    container {
      name    = "producer"
      image   = local.image
      command = ["servicetags", "produce"]
      cpu     = 0.25
      memory  = "0.5Gi"

      dynamic "env" {
        for_each = local.producer_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.acr_pull,
    azurerm_role_assignment.producer_regions,
    azurerm_role_assignment.producer_snapshots,
    azurerm_role_assignment.producer_runs,
    azurerm_role_assignment.producer_run_deadlines,
  ]
}

resource "azurerm_container_app_job" "worker" {
  name                         = "job-${var.name_prefix}-worker"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  # One full-cloud reply is parsed per region; generous, since a stuck replica only delays.
  replica_timeout_in_seconds = 1800
  # Retries are the queue's job (visibility timeout, then poison after max_tries).
  replica_retry_limit = 0

  event_trigger_config {
    parallelism              = 1
    replica_completion_count = 1

    scale {
      min_executions              = 0
      max_executions              = var.worker_max_executions
      polling_interval_in_seconds = 30

      rules {
        name             = "regions-queue"
        custom_rule_type = "azure-queue"
        # KEDA reads the queue length with the job's own identity: no connection string.
        identity_id = azurerm_user_assigned_identity.worker.id
        metadata = {
          accountName = azurerm_storage_account.main.name
          queueName   = azurerm_storage_queue.regions.name
          queueLength = "1"
        }
      }
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.worker.id]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.worker.id
  }

  template {
    container {
      name  = "worker"
      image = local.image
      # Drain what is queued, then exit, so each execution ends and KEDA can scale to zero.
      command = ["servicetags", "worker", "--until-empty"]
      cpu     = 0.5
      memory  = "1Gi"

      dynamic "env" {
        for_each = local.worker_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  tags = local.tags

  lifecycle {
    # A variable's validation cannot name another variable before Terraform 1.9; the worker
    # refuses to start with the same source twice, so the plan refuses it first (written
    # without != because of the operator note in versions.tf).
    precondition {
      condition     = contains(["arm/none", "arm/download-center", "download-center/none", "download-center/arm"], "${var.worker_source}/${var.worker_observed_source}")
      error_message = "worker_observed_source must differ from worker_source (or be none)."
    }
  }

  depends_on = [
    azurerm_role_assignment.acr_pull,
    azurerm_role_assignment.worker_regions,
    azurerm_role_assignment.worker_regions_poison,
    azurerm_role_assignment.worker_snapshots,
    azurerm_role_assignment.worker_reports,
    azurerm_role_assignment.worker_service_tag_reader,
    azurerm_role_assignment.worker_runs,
  ]
}

resource "azurerm_container_app_job" "notifier" {
  name                         = "job-${var.name_prefix}-notifier"
  resource_group_name          = azurerm_resource_group.main.name
  location                     = azurerm_resource_group.main.location
  container_app_environment_id = azurerm_container_app_environment.main.id

  replica_timeout_in_seconds = 600
  replica_retry_limit        = 0

  event_trigger_config {
    parallelism              = 1
    replica_completion_count = 1

    scale {
      min_executions              = 0
      max_executions              = 3
      polling_interval_in_seconds = 30

      rules {
        name             = "change-events-queue"
        custom_rule_type = "azure-queue"
        identity_id      = azurerm_user_assigned_identity.notifier.id
        metadata = {
          accountName = azurerm_storage_account.main.name
          queueName   = azurerm_storage_queue.change_events.name
          queueLength = "1"
        }
      }

      # A run's deadline message is invisible until the deadline: count visible ones only,
      # or a job would start (and wait) for every run in progress.
      rules {
        name             = "run-deadlines-queue"
        custom_rule_type = "azure-queue"
        identity_id      = azurerm_user_assigned_identity.notifier.id
        metadata = {
          accountName         = azurerm_storage_account.main.name
          queueName           = azurerm_storage_queue.run_deadlines.name
          queueLength         = "1"
          queueLengthStrategy = "visibleonly"
        }
      }
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.notifier.id]
  }

  registry {
    server   = azurerm_container_registry.main.login_server
    identity = azurerm_user_assigned_identity.notifier.id
  }

  template {
    container {
      name    = "notifier"
      image   = local.image
      command = ["servicetags", "notifier", "--until-empty"]
      cpu     = 0.25
      memory  = "0.5Gi"

      dynamic "env" {
        for_each = local.notifier_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  tags = local.tags

  depends_on = [
    azurerm_role_assignment.acr_pull,
    azurerm_role_assignment.notifier_change_events,
    azurerm_role_assignment.notifier_change_events_poison,
    azurerm_role_assignment.notifier_reports,
    azurerm_role_assignment.notifier_notifications,
    azurerm_role_assignment.notifier_email,
    azurerm_role_assignment.notifier_runs,
    azurerm_role_assignment.notifier_run_deadlines,
    azurerm_role_assignment.notifier_keyvault_secrets,
  ]
}
