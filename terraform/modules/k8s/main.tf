# FlowGuard Appliance on an existing Kubernetes cluster: namespace, master key and license
# Secrets, and the helm/flowguard chart installed from a local path (nothing is downloaded).

locals {
  chart_path = coalesce(var.chart_path, "${path.module}/../../../helm/flowguard")

  # Same rule as the chart's flowguard.fullname helper.
  fullname = strcontains(var.release_name, "flowguard") ? var.release_name : "${var.release_name}-flowguard"

  master_key_secret = var.master_key_existing_secret != "" ? var.master_key_existing_secret : "${var.release_name}-master-key"
  license_secret    = "${var.release_name}-license"
  has_license       = var.license != null

  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace

  egress_ai = var.ai_endpoint == null ? [] : [
    for c in var.ai_endpoint.cidrs : { cidr = c, ports = var.ai_endpoint.ports }
  ]

  values = {
    replicaCount = var.replicas
    image = {
      repository = var.image_repository
      tag        = var.image_tag
      digest     = var.image_digest
      pullPolicy = "IfNotPresent"
    }
    imagePullSecrets = var.image_pull_secret == "" ? [] : [{ name = var.image_pull_secret }]
    masterKey = {
      existingSecret = local.master_key_secret
      secretKey      = "master.key"
      create         = false
    }
    license = {
      required       = var.license_required
      existingSecret = local.has_license ? local.license_secret : ""
      secretKey      = "license.token"
    }
    config = {
      region  = var.region
      regions = var.regions
      tls = {
        mode           = "on"
        existingSecret = var.tls_existing_secret
      }
    }
    persistence = {
      enabled          = true
      storageClassName = var.storage_class
      size             = var.storage_size
    }
    ingress = {
      enabled   = var.ingress.enabled
      className = var.ingress.class_name
      tlsMode   = var.ingress.tls_mode
      hosts     = var.ingress.enabled ? [{ host = var.ingress.host }] : []
      tls = var.ingress.enabled && var.ingress.tls_mode == "reencrypt" && var.ingress.tls_secret != "" ? [
        { secretName = var.ingress.tls_secret, hosts = [var.ingress.host] }
      ] : []
    }
    networkPolicy = {
      enabled = true
      egress = {
        aiEndpoint  = local.egress_ai
        ldap        = var.ldap_hosts
        ticketHosts = var.ticket_hosts
      }
    }
  }
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of"                  = "flowguard"
      "pod-security.kubernetes.io/enforce"         = "restricted"
      "pod-security.kubernetes.io/enforce-version" = "latest"
      "pod-security.kubernetes.io/audit"           = "restricted"
      "pod-security.kubernetes.io/warn"            = "restricted"
    }
  }
}

resource "kubernetes_secret_v1" "master_key" {
  count = var.master_key_base64 != null ? 1 : 0

  metadata {
    name      = local.master_key_secret
    namespace = local.namespace
    labels = {
      "app.kubernetes.io/part-of"    = "flowguard"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "Opaque"

  # binary_data takes base64: the Secret holds the 32 raw key bytes.
  binary_data = {
    "master.key" = var.master_key_base64
  }

  lifecycle {
    # Losing this Secret without a backup of the key makes every store unreadable.
    prevent_destroy = true
  }
}

resource "kubernetes_secret_v1" "license" {
  count = local.has_license ? 1 : 0

  metadata {
    name      = local.license_secret
    namespace = local.namespace
    labels = {
      "app.kubernetes.io/part-of"    = "flowguard"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "Opaque"

  data = {
    "license.token" = var.license
  }
}

resource "helm_release" "flowguard" {
  name      = var.release_name
  namespace = local.namespace
  chart     = local.chart_path

  atomic          = true
  wait            = true
  timeout         = var.timeout_seconds
  cleanup_on_fail = true
  max_history     = 10

  values = concat([yamlencode(local.values)], var.extra_values)

  depends_on = [
    kubernetes_secret_v1.master_key,
    kubernetes_secret_v1.license,
  ]

  lifecycle {
    precondition {
      condition     = (var.master_key_base64 != null) != (var.master_key_existing_secret != "")
      error_message = "Set exactly one of master_key_base64 and master_key_existing_secret."
    }
    precondition {
      condition     = !var.license_required || var.license != null
      error_message = "license is required (license_required = true): pass the license token, or set license_required = false for the Free plan."
    }
  }
}
