# Renders cloud-init user_data that installs FlowGuard from a local mirror path: nothing on the
# VM reaches the network (no apt update, no package upgrade, no download).

locals {
  stage = "/run/flowguard-install"

  # Single-quote a value for /bin/sh.
  sh_quote = { for k, v in {
    FG_DEB_PATH    = var.deb_path
    FG_DEB_SHA256  = var.deb_sha256
    FG_INIT_TENANT = var.init_tenant == null ? "" : var.init_tenant.name
    FG_INIT_EMAIL  = var.init_tenant == null ? "" : var.init_tenant.owner_email
    FG_START       = var.start_service ? "true" : "false"
  } : k => "'${replace(v, "'", "'\"'\"'")}'" }

  env_file = join("", [for k in sort(keys(local.sh_quote)) : "${k}=${local.sh_quote[k]}\n"])

  # flowguard.toml; strings are JSON-encoded, which TOML basic strings accept.
  config_toml = join("\n", [
    "# Written by cloud-init (terraform/modules/vm-cloud-init) on first boot.",
    "data_dir = \"/var/lib/flowguard\"",
    "listen = ${jsonencode(var.listen)}",
    "region = ${jsonencode(var.region)}",
    "trusted_proxies = ${jsonencode(var.trusted_proxies)}",
    "",
    "[tls]",
    "mode = \"on\"",
    "",
    "[regions]",
    join("\n", [for name in sort(keys(var.regions)) : "${name} = ${jsonencode(var.regions[name])}"]),
    var.extra_toml,
  ])

  write_files = concat(
    [
      {
        path        = "${local.stage}/env"
        owner       = "root:root"
        permissions = "0600"
        content     = local.env_file
      },
      {
        path        = "${local.stage}/install-flowguard.sh"
        owner       = "root:root"
        permissions = "0700"
        content     = file("${path.module}/files/install-flowguard.sh")
      },
      {
        path        = "${local.stage}/flowguard.toml"
        owner       = "root:root"
        permissions = "0600"
        content     = "${local.config_toml}\n"
      },
    ],
    var.master_key_base64 == null ? [] : [
      {
        path        = "${local.stage}/master.key"
        owner       = "root:root"
        permissions = "0600"
        encoding    = "b64"
        content     = var.master_key_base64
      },
    ],
    var.license == null ? [] : [
      {
        path        = "${local.stage}/license.token"
        owner       = "root:root"
        permissions = "0600"
        content     = var.license
      },
    ],
  )

  cloud_config = merge(
    {
      # Air-gapped: never touch the network for packages.
      package_update             = false
      package_upgrade            = false
      package_reboot_if_required = false
      write_files                = local.write_files
      runcmd                     = [["/bin/sh", "${local.stage}/install-flowguard.sh"]]
    },
    var.mirror_mount == null ? {} : {
      mounts = [[
        var.mirror_mount.device,
        var.mirror_mount.path,
        var.mirror_mount.fstype,
        var.mirror_mount.options,
        "0",
        "0",
      ]]
    },
  )

  user_data = "#cloud-config\n${yamlencode(local.cloud_config)}"
}
