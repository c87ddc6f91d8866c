variable "subscription_id" {
  type        = string
  description = "Subscription to deploy into. The worker calls the Service Tag Discovery API in this subscription."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID."
  }
}

variable "location" {
  type        = string
  description = "Azure region for every resource (ARM location name, e.g. westeurope)."
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.location))
    error_message = "location must be an ARM location name such as westeurope (lower case, no spaces)."
  }
}

variable "name_prefix" {
  type        = string
  description = "Short prefix for resource names. Storage and registry names add a stable suffix derived from the subscription, because those names are global."
  default     = "stwatch"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name_prefix))
    error_message = "name_prefix must be 3-12 lower-case letters or digits, starting with a letter."
  }
}

variable "image_tag" {
  type        = string
  description = "Tag of the servicetags-watch image in the registry, as pushed by the build-push workflow (e.g. v0.1.0)."

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid container image tag."
  }
}

variable "cloud" {
  type        = string
  description = "Azure cloud whose service tags are watched (SERVICETAGS_CLOUD)."
  default     = "Public"

  validation {
    condition     = contains(["Public", "AzureGovernment", "AzureChina"], var.cloud)
    error_message = "cloud must be Public, AzureGovernment or AzureChina."
  }
}

variable "regions" {
  type        = string
  description = "Regions the producer enqueues (SERVICETAGS_REGIONS): comma-separated ARM location names and/or global, or all."
  default     = "all"

  validation {
    condition     = can(regex("^(all|[a-z0-9]+(,[a-z0-9]+)*)$", var.regions))
    error_message = "regions must be all, or comma-separated ARM location names (e.g. japaneast,global) without spaces."
  }
}

variable "producer_cron" {
  type        = string
  description = "When the producer runs: a five-field cron expression, evaluated in UTC. Daily by default."
  default     = "17 5 * * *"

  validation {
    condition     = can(regex("^\\S+( +\\S+){4}$", trimspace(var.producer_cron)))
    error_message = "producer_cron must be a five-field cron expression, e.g. \"17 5 * * *\"."
  }
}

variable "recipients" {
  description = "Who receives change reports, and the filters each one wants (SERVICETAGS_RECIPIENTS). Omit regions/tags to receive everything; tags accept * wildcards."
  type = list(object({
    address       = string
    regions       = optional(list(string))
    tags          = optional(list(string))
    services      = optional(list(string))
    delivery      = optional(string)
    min_addresses = optional(number)
    family        = optional(string)
  }))

  validation {
    condition     = can(var.recipients[0])
    error_message = "recipients needs at least one entry."
  }

  validation {
    condition     = alltrue([for r in var.recipients : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", r.address))])
    error_message = "Every recipient address must look like an e-mail address."
  }
}

variable "alert_email_addresses" {
  type        = list(string)
  description = "Operators who receive the Azure Monitor alerts (change reports, poisoned messages or failed runs, staleness)."

  validation {
    condition     = alltrue(concat([can(var.alert_email_addresses[0])], [for a in var.alert_email_addresses : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", a))]))
    error_message = "alert_email_addresses needs at least one e-mail address."
  }
}

variable "staleness_hours" {
  type        = number
  description = "Alert when no region check has succeeded for this many hours. Keep it above the producer's interval."
  default     = 30

  validation {
    # A log alert looks back at most two days (window P2D), so the threshold must fit inside it.
    condition     = contains(range(1, 48), var.staleness_hours)
    error_message = "staleness_hours must be a whole number from 1 to 47."
  }
}

variable "max_tries" {
  type        = number
  description = "Deliveries of one message before it goes to the poison queue (SERVICETAGS_MAX_TRIES)."
  default     = 5

  validation {
    condition     = contains(range(1, 51), var.max_tries)
    error_message = "max_tries must be between 1 and 50."
  }
}

variable "worker_max_executions" {
  type        = number
  description = "Upper bound on concurrent worker executions KEDA starts for the regions queue."
  default     = 10

  validation {
    condition     = contains(range(1, 101), var.worker_max_executions)
    error_message = "worker_max_executions must be between 1 and 100."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the Log Analytics workspace keeps logs (the change-report records are the audit trail)."
  default     = 90

  validation {
    condition     = contains(range(30, 731), var.log_retention_days)
    error_message = "log_retention_days must be between 30 and 730."
  }
}

variable "email_data_location" {
  type        = string
  description = "Data location of the Communication Services resources (e.g. Europe, United States)."
  default     = "Europe"
}

variable "github_owner" {
  type        = string
  description = "GitHub user or organisation that owns the repository whose workflows deploy this."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", var.github_owner))
    error_message = "github_owner must be a GitHub user or organisation name."
  }
}

variable "github_repository" {
  type        = string
  description = "Name of the repository (without the owner) whose workflows may log in to Azure."

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,100}$", var.github_repository))
    error_message = "github_repository must be a repository name without the owner."
  }
}

variable "github_environment" {
  type        = string
  description = "GitHub environment that gates terraform apply, image pushes and run-now; its name is part of the OIDC subject."
  default     = "production"
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource that takes them."
  default     = {}
}

variable "worker_source" {
  type        = string
  description = "The worker's primary tag source, the one reports are made from (SERVICETAGS_SOURCE): arm (the Service Tag Discovery API) or download-center (Microsoft's weekly file). See docs/architecture.md, \"Sources and the API's lag\"."
  default     = "arm"

  validation {
    condition     = contains(["arm", "download-center"], var.worker_source)
    error_message = "worker_source must be arm or download-center."
  }
}

variable "worker_observed_source" {
  type        = string
  description = "A second source the worker reads beside the primary and only records (SERVICETAGS_OBSERVED_SOURCE): none, arm or download-center, never the same as worker_source."
  default     = "none"

  validation {
    condition     = contains(["none", "arm", "download-center"], var.worker_observed_source)
    error_message = "worker_observed_source must be none, arm or download-center."
  }
}
