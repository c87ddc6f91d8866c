resource "azurerm_monitor_action_group" "operators" {
  name                = "ag-${var.name_prefix}-operators"
  resource_group_name = azurerm_resource_group.main.name
  short_name          = "stwatch"

  dynamic "email_receiver" {
    for_each = toset(var.alert_email_addresses)
    content {
      name                    = "email-${replace(email_receiver.value, "/[^A-Za-z0-9]/", "-")}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }

  tags = local.tags
}

locals {
  job_names = [
    azurerm_container_app_job.producer.name,
    azurerm_container_app_job.worker.name,
    azurerm_container_app_job.notifier.name,
  ]

  # The components write one JSON object per line; Container Apps stores each line in Log_s.
  # `has` is a cheap indexed pre-filter, parse_json makes the match exact.
  change_report_query = <<-KQL
    ContainerAppConsoleLogs_CL
    | where Log_s has "change_report"
    | extend record = parse_json(Log_s)
    | where tostring(record.event) == "change_report"
    | project TimeGenerated, region = tostring(record.region), record
  KQL

  # Poisoned messages (logged by the component that moved them) and failed job runs.
  # System-log column names differ between environments, hence column_ifexists.
  trouble_query = <<-KQL
    let jobs = dynamic(${jsonencode(local.job_names)});
    let poisoned = ContainerAppConsoleLogs_CL
        | where Log_s has "message_poisoned"
        | extend record = parse_json(Log_s)
        | where tostring(record.event) == "message_poisoned"
        | project TimeGenerated, kind = "message_poisoned", detail = Log_s;
    let failed = ContainerAppSystemLogs_CL
        | extend job = coalesce(column_ifexists("ContainerJobName_s", ""), column_ifexists("JobName_s", ""))
        | where job in (jobs)
        | where column_ifexists("Log_s", "") has_any ("failed", "BackOff", "OOMKilled")
            or column_ifexists("Reason_s", "") has_any ("Failed", "BackOff", "OOMKilled")
        | project TimeGenerated, kind = "job_failed", detail = strcat(job, ": ", column_ifexists("Log_s", ""));
    union poisoned, failed
  KQL

  # Rows only when no successful region check happened within the threshold. The outer
  # summarize returns one row even over no data, so silence itself raises the alert.
  staleness_query = <<-KQL
    ContainerAppConsoleLogs_CL
    | where TimeGenerated > ago(${var.staleness_hours}h)
    | where Log_s has "region_checked"
    | extend record = parse_json(Log_s)
    | where tostring(record.event) == "region_checked"
    | summarize checks = count()
    | where checks == 0
  KQL
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "change_report" {
  name                 = "alert-${var.name_prefix}-change-report"
  resource_group_name  = azurerm_resource_group.main.name
  location             = azurerm_resource_group.main.location
  description          = "servicetags-watch found service-tag ranges that changed; the notifier logged a change_report record."
  scopes               = [azurerm_log_analytics_workspace.main.id]
  severity             = 3
  evaluation_frequency = "PT15M"
  window_duration      = "PT15M"
  # The table exists only after the first job has logged, so validation at creation would fail.
  skip_query_validation   = true
  auto_mitigation_enabled = false

  criteria {
    query                   = local.change_report_query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    dimension {
      name     = "region"
      operator = "Include"
      values   = ["*"]
    }

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.operators.id]
  }

  tags = local.tags
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "trouble" {
  name                    = "alert-${var.name_prefix}-poison-or-failed-run"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  description             = "A message went to a poison queue, or a servicetags-watch job run failed."
  scopes                  = [azurerm_log_analytics_workspace.main.id]
  severity                = 2
  evaluation_frequency    = "PT15M"
  window_duration         = "PT15M"
  skip_query_validation   = true
  auto_mitigation_enabled = false

  criteria {
    query                   = local.trouble_query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.operators.id]
  }

  tags = local.tags
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "stale" {
  name                 = "alert-${var.name_prefix}-stale"
  resource_group_name  = azurerm_resource_group.main.name
  location             = azurerm_resource_group.main.location
  description          = "No region check has succeeded for ${var.staleness_hours} hours: the data may be out of date."
  scopes               = [azurerm_log_analytics_workspace.main.id]
  severity             = 2
  evaluation_frequency = "PT1H"
  # The query bounds itself with ago(); the window only has to be at least that long.
  window_duration         = "P2D"
  skip_query_validation   = true
  auto_mitigation_enabled = true

  criteria {
    query                   = local.staleness_query
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.operators.id]
  }

  tags = local.tags
}
