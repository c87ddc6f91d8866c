# Alerts for the `download-center` source and the region lifecycle (issue 10): the details
# page that no longer yields a file link (retried, then poisoned; this says why at once), and
# a source that served an older reply than was recorded (a rollback or a lagging location).

locals {
  download_link_missing_query = <<-KQL
    ContainerAppConsoleLogs_CL
    | where Log_s has "download_link_missing"
    | extend record = parse_json(Log_s)
    | where tostring(record.event) == "download_link_missing"
    | project TimeGenerated, cloud = tostring(record.cloud), page = tostring(record.page)
  KQL

  source_regressed_query = <<-KQL
    ContainerAppConsoleLogs_CL
    | where Log_s has "source_regressed"
    | extend record = parse_json(Log_s)
    | where tostring(record.event) == "source_regressed"
    | project TimeGenerated, cloud = tostring(record.cloud), seen = tostring(record.seen_change_number),
        recorded = tostring(record.recorded_change_number)
  KQL
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "download_link_missing" {
  name                    = "alert-${var.name_prefix}-download-link-missing"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  description             = "The Download Center details page yields no service-tag file link: the download-center source cannot find the weekly file."
  scopes                  = [azurerm_log_analytics_workspace.main.id]
  severity                = 2
  evaluation_frequency    = "PT15M"
  window_duration         = "PT15M"
  skip_query_validation   = true
  auto_mitigation_enabled = false

  criteria {
    query                   = local.download_link_missing_query
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

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "source_regressed" {
  name                    = "alert-${var.name_prefix}-source-regressed"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  description             = "A service-tag source served an older reply than was recorded (nothing was reported; the checks were stale)."
  scopes                  = [azurerm_log_analytics_workspace.main.id]
  severity                = 3
  evaluation_frequency    = "PT1H"
  window_duration         = "PT1H"
  skip_query_validation   = true
  auto_mitigation_enabled = false

  criteria {
    query                   = local.source_regressed_query
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
