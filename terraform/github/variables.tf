variable "github_owner" {
  type        = string
  description = "GitHub user or organisation that owns the repository."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", var.github_owner))
    error_message = "github_owner must be a GitHub user or organisation name."
  }
}

variable "github_repository" {
  type        = string
  description = "Repository name, without the owner."

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,100}$", var.github_repository))
    error_message = "github_repository must be a repository name without the owner."
  }
}

variable "state_backend" {
  description = "Where the Terraform state lives (the same values given to terraform init -backend-config); read here for the Azure outputs and published to GitHub so the workflows can init."
  type = object({
    resource_group_name  = string
    storage_account_name = string
    container_name       = optional(string, "tfstate")
    key                  = optional(string, "servicetags-watch.tfstate")
  })
}
