# Example: FlowGuard on an existing cluster, images and chart from the site's own mirror.
#
#   terraform init      # providers from a local mirror: see docs/air-gapped-install.md
#   terraform apply -var-file=site.tfvars

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    # The module works with helm provider 2.x and 3.x; this example's provider block below
    # uses the 2.x syntax (3.x writes `kubernetes = { ... }`).
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.12.0, < 3.0.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.25.0, < 4.0.0"
    }
  }
}

variable "kubeconfig" {
  description = "Path of the kubeconfig for the target cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "master_key_base64" {
  description = "base64 of 32 random bytes (head -c32 /dev/urandom | base64). Keep a copy offline."
  type        = string
  sensitive   = true
}

variable "license" {
  description = "FlowGuard license token."
  type        = string
  sensitive   = true
}

provider "kubernetes" {
  config_path = var.kubeconfig
}

provider "helm" {
  kubernetes {
    config_path = var.kubeconfig
  }
}

module "flowguard" {
  source = "../../modules/k8s"

  namespace        = "flowguard"
  image_repository = "registry.corp.example/flowguard/flowguard"
  image_digest     = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

  master_key_base64 = var.master_key_base64
  license           = var.license

  region = "eus"
  regions = {
    weu = "https://weu.flowguard.corp.example"
  }

  ai_endpoint = {
    cidrs = ["10.20.0.15/32"]
    ports = [443]
  }
  ldap_hosts   = [{ cidr = "10.20.1.0/28", ports = [636] }]
  ticket_hosts = [{ cidr = "10.20.2.7/32" }]

  storage_class = "fast-ssd"
  storage_size  = "50Gi"

  ingress = {
    enabled    = true
    class_name = "nginx"
    host       = "flowguard.corp.example"
    tls_mode   = "passthrough"
  }
}

output "tenant_create_command" {
  description = "Run to create a tenant and its Owner."
  value       = module.flowguard.tenant_create_command
}
