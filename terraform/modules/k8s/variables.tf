# Inputs of the FlowGuard Kubernetes module. The providers (helm, kubernetes) are configured by
# the caller; this module only declares resources, and installs the chart from a local path so
# that nothing is fetched from a chart repository.

variable "namespace" {
  description = "Namespace to deploy into. Created (with the Pod Security Admission 'restricted' labels) when create_namespace is true."
  type        = string
  default     = "flowguard"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters."
  }
}

variable "create_namespace" {
  description = "Create the namespace. Set false to deploy into an existing one."
  type        = bool
  default     = true
}

variable "release_name" {
  description = "Helm release name."
  type        = string
  default     = "flowguard"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$", var.release_name))
    error_message = "release_name must be a DNS-1123 label of at most 53 characters."
  }
}

variable "chart_path" {
  description = "Local path of the helm/flowguard chart (a directory or a packaged .tgz). Defaults to the chart in this repository; air-gapped sites copy it with the release."
  type        = string
  default     = null
}

variable "image_repository" {
  description = "FlowGuard image in the site's internal registry, e.g. registry.corp.example/flowguard/flowguard."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$", var.image_repository))
    error_message = "image_repository must be a registry/path image name without tag or digest."
  }
}

variable "image_tag" {
  description = "Image tag; empty uses the chart's appVersion. Ignored when image_digest is set."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$", var.image_tag))
    error_message = "image_tag must be a valid OCI tag (or empty)."
  }
}

variable "image_digest" {
  description = "Pin the image by digest (sha256:<64 hex>). Recommended."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(sha256:[a-f0-9]{64})?$", var.image_digest))
    error_message = "image_digest must be empty or sha256:<64 lowercase hex digits>."
  }
}

variable "image_pull_secret" {
  description = "Name of an existing docker-registry Secret in the namespace for the internal registry; empty for none."
  type        = string
  default     = ""
}

variable "master_key_base64" {
  description = "Master key (KEK): base64 of exactly 32 random bytes, e.g. `head -c32 /dev/urandom | base64`. Stored in a Kubernetes Secret (and in the Terraform state: protect the state). Mutually exclusive with master_key_existing_secret."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.master_key_base64 == null || can(regex("^[A-Za-z0-9+/]{43}=$", var.master_key_base64))
    error_message = "master_key_base64 must be the base64 encoding of exactly 32 bytes (44 characters ending in '=')."
  }
}

variable "master_key_existing_secret" {
  description = "Name of an existing Secret (key master.key) holding the master key, e.g. managed by your secret store. Mutually exclusive with master_key_base64."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$", var.master_key_existing_secret))
    error_message = "master_key_existing_secret must be empty or a valid Secret name."
  }
}

variable "license" {
  description = "License token issued by FlowGuard. Required unless license_required is false (Free plan)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.license == null || can(regex("^[A-Za-z0-9._~+/=-]{16,16384}$", var.license))
    error_message = "license must be the token as issued (base64url/JWS characters, 16 to 16384 characters)."
  }
}

variable "license_required" {
  description = "Refuse to deploy without a license (the chart's license.required)."
  type        = bool
  default     = true
}

variable "region" {
  description = "Region this deployment serves (lowercase letters/digits, 2-16 characters), e.g. eus."
  type        = string
  default     = "local"

  validation {
    condition     = can(regex("^[a-z0-9]{2,16}$", var.region))
    error_message = "region must be 2-16 lowercase letters or digits."
  }
}

variable "regions" {
  description = "Public HTTPS endpoint of every other region, e.g. { weu = \"https://weu.flowguard.corp.example\" }."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name, url in var.regions : can(regex("^[a-z0-9]{2,16}$", name)) && can(regex("^https://[^\\s\"]+$", url))
    ])
    error_message = "regions keys must be region names (2-16 lowercase letters/digits) and values https:// URLs."
  }
}

variable "ai_endpoint" {
  description = "Network location of the customer's AI endpoint, for the NetworkPolicy egress allow-list (the URL and key themselves are configured in the appliance). null: no AI egress."
  type = object({
    cidrs = list(string)
    ports = optional(list(number), [443])
  })
  default = null

  validation {
    condition = var.ai_endpoint == null || alltrue([
      for c in try(var.ai_endpoint.cidrs, []) : can(cidrhost(c, 0))
    ])
    error_message = "ai_endpoint.cidrs must be valid CIDR blocks, e.g. 10.20.0.15/32."
  }

  validation {
    condition = var.ai_endpoint == null || alltrue([
      for p in try(var.ai_endpoint.ports, []) : p >= 1 && p <= 65535 && floor(p) == p
    ])
    error_message = "ai_endpoint.ports must be TCP port numbers."
  }
}

variable "ldap_hosts" {
  description = "LDAP servers the appliance may reach (egress allow-list)."
  type = list(object({
    cidr  = string
    ports = optional(list(number), [636])
  }))
  default = []

  validation {
    condition     = alltrue([for h in var.ldap_hosts : can(cidrhost(h.cidr, 0)) && alltrue([for p in h.ports : p >= 1 && p <= 65535])])
    error_message = "ldap_hosts entries need a valid cidr and TCP ports."
  }
}

variable "ticket_hosts" {
  description = "Ticket servers (Jira, GitLab, ...) the appliance may reach (egress allow-list)."
  type = list(object({
    cidr  = string
    ports = optional(list(number), [443])
  }))
  default = []

  validation {
    condition     = alltrue([for h in var.ticket_hosts : can(cidrhost(h.cidr, 0)) && alltrue([for p in h.ports : p >= 1 && p <= 65535])])
    error_message = "ticket_hosts entries need a valid cidr and TCP ports."
  }
}

variable "replicas" {
  description = "StatefulSet replicas (shards); each has its own volume."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 64 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number from 1 to 64."
  }
}

variable "storage_class" {
  description = "StorageClass of the data volumes; empty uses the cluster default."
  type        = string
  default     = ""
}

variable "storage_size" {
  description = "Size of each replica's data volume (Kubernetes quantity)."
  type        = string
  default     = "10Gi"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$", var.storage_size))
    error_message = "storage_size must be a Kubernetes quantity such as 10Gi."
  }
}

variable "ingress" {
  description = "Optional Ingress. tls_mode: passthrough (the appliance terminates TLS) or reencrypt (tls_secret holds the edge certificate)."
  type = object({
    enabled    = optional(bool, false)
    class_name = optional(string, "")
    host       = optional(string, "")
    tls_mode   = optional(string, "passthrough")
    tls_secret = optional(string, "")
  })
  default = {}

  validation {
    condition     = contains(["passthrough", "reencrypt"], var.ingress.tls_mode)
    error_message = "ingress.tls_mode must be passthrough or reencrypt."
  }

  validation {
    condition     = !var.ingress.enabled || can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.ingress.host))
    error_message = "ingress.host must be a DNS name when the ingress is enabled."
  }
}

variable "tls_existing_secret" {
  description = "A kubernetes.io/tls Secret with the appliance's server certificate; empty: the appliance generates a self-signed one."
  type        = string
  default     = ""
}

variable "extra_values" {
  description = "Further chart values (YAML documents), merged after the module's own."
  type        = list(string)
  default     = []
}

variable "timeout_seconds" {
  description = "How long Helm waits for the release to become ready."
  type        = number
  default     = 600

  validation {
    condition     = var.timeout_seconds >= 60
    error_message = "timeout_seconds must be at least 60."
  }
}
