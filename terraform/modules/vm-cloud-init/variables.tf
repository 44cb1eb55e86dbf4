# Inputs of the cloud-init module: it renders `user_data` that installs the FlowGuard .deb on a
# Debian/Ubuntu VM from a path on the VM's local package mirror (a mounted ISO, NFS share or
# disk), with no network access at all.

variable "deb_path" {
  description = "Absolute path of flowguard_<version>_<arch>.deb on the VM's local package mirror, e.g. /srv/mirror/flowguard/flowguard_0.1.0-1_amd64.deb."
  type        = string

  validation {
    condition     = can(regex("^/[A-Za-z0-9._+/-]+\\.deb$", var.deb_path))
    error_message = "deb_path must be an absolute path ending in .deb (letters, digits, . _ + - / only)."
  }
}

variable "deb_sha256" {
  description = "Expected SHA-256 of the .deb (64 hex digits); checked before installing. Empty: not checked."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-f0-9]{64})?$", var.deb_sha256))
    error_message = "deb_sha256 must be empty or 64 lowercase hex digits."
  }
}

variable "mirror_mount" {
  description = "Optional mount of the local mirror before installing: { device = \"/dev/sr0\", path = \"/srv/mirror\", fstype = \"iso9660\" } or an NFS export. null: the path is already there."
  type = object({
    device  = string
    path    = string
    fstype  = optional(string, "auto")
    options = optional(string, "ro,nofail")
  })
  default = null

  validation {
    condition     = var.mirror_mount == null || can(regex("^/[A-Za-z0-9._/-]+$", try(var.mirror_mount.path, "")))
    error_message = "mirror_mount.path must be an absolute path."
  }
}

variable "region" {
  description = "Region this deployment serves (2-16 lowercase letters/digits)."
  type        = string
  default     = "local"

  validation {
    condition     = can(regex("^[a-z0-9]{2,16}$", var.region))
    error_message = "region must be 2-16 lowercase letters or digits."
  }
}

variable "regions" {
  description = "Public HTTPS endpoint of every other region."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name, url in var.regions : can(regex("^[a-z0-9]{2,16}$", name)) && can(regex("^https://[^\\s\"]+$", url))
    ])
    error_message = "regions keys must be region names and values https:// URLs."
  }
}

variable "listen" {
  description = "Listen address ADDR:PORT. Ports below 1024 need a systemd drop-in granting CAP_NET_BIND_SERVICE."
  type        = string
  default     = "0.0.0.0:8443"

  validation {
    condition     = can(regex("^([0-9.]+|\\[[0-9a-fA-F:]+\\]):([0-9]{4,5})$", var.listen)) && try(tonumber(regex(":([0-9]+)$", var.listen)[0]) >= 1024 && tonumber(regex(":([0-9]+)$", var.listen)[0]) <= 65535, false)
    error_message = "listen must be IPv4:PORT or [IPv6]:PORT with a port from 1024 to 65535."
  }
}

variable "trusted_proxies" {
  description = "CIDRs of reverse proxies whose X-Forwarded-For is believed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.trusted_proxies : can(cidrhost(c, 0))])
    error_message = "trusted_proxies must be CIDR blocks."
  }
}

variable "master_key_base64" {
  description = "Optional master key: base64 of exactly 32 random bytes. null: the appliance creates one on first start (then back it up from /var/lib/flowguard/keys/master.key). Never replaces an existing key. Note that user_data is readable by whoever can read the VM's metadata."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.master_key_base64 == null || can(regex("^[A-Za-z0-9+/]{43}=$", var.master_key_base64))
    error_message = "master_key_base64 must be the base64 encoding of exactly 32 bytes (44 characters ending in '=')."
  }
}

variable "license" {
  description = "Optional license token, written to /etc/flowguard/license.token (0640 root:flowguard)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.license == null || can(regex("^[A-Za-z0-9._~+/=-]{16,16384}$", var.license))
    error_message = "license must be the token as issued."
  }
}

variable "init_tenant" {
  description = "Optional first tenant { name, owner_email } created with `flowguard init`; created before the first start; the Owner's one-time password lands in /var/lib/flowguard/initial-owner.json (0600). null: the first start bootstraps tenant \"default\" and writes /var/lib/flowguard/initial-credentials."
  type = object({
    name        = string
    owner_email = string
  })
  default = null

  validation {
    condition     = var.init_tenant == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", try(var.init_tenant.owner_email, "")))
    error_message = "init_tenant.owner_email must be an e-mail address."
  }

  validation {
    condition     = var.init_tenant == null || (length(try(var.init_tenant.name, "")) >= 1 && length(try(var.init_tenant.name, "")) <= 100)
    error_message = "init_tenant.name must be 1-100 characters."
  }
}

variable "start_service" {
  description = "Enable and start flowguard.service at the end of the install."
  type        = bool
  default     = true
}

variable "extra_toml" {
  description = "Extra TOML appended to flowguard.toml; must start with a [table] header. Unknown keys make the appliance refuse to start."
  type        = string
  default     = ""
}
