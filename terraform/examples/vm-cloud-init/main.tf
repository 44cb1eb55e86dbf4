# Example: render user_data for a VM that installs FlowGuard from the mirror on its CD-ROM.
# Feed `user_data` to your platform's VM resource (vsphere_virtual_machine guestinfo,
# openstack_compute_instance_v2.user_data, libvirt_cloudinit_disk, ...).

terraform {
  required_version = ">= 1.5.0"
}

variable "deb_sha256" {
  description = "SHA-256 of the .deb shipped on the mirror (from the release's SHA256SUMS)."
  type        = string
  default     = ""
}

module "flowguard_vm" {
  source = "../../modules/vm-cloud-init"

  mirror_mount = {
    device = "/dev/sr0"
    path   = "/srv/mirror"
    fstype = "iso9660"
  }
  deb_path   = "/srv/mirror/flowguard/flowguard_0.1.0-1_amd64.deb"
  deb_sha256 = var.deb_sha256

  region          = "eus"
  listen          = "0.0.0.0:8443"
  trusted_proxies = ["10.42.0.0/16"]

  init_tenant = {
    name        = "Acme QA"
    owner_email = "qa-owner@acme.example"
  }
}

output "user_data" {
  description = "cloud-init user_data for the VM."
  value       = module.flowguard_vm.user_data
  sensitive   = true
}

output "config_toml" {
  description = "The configuration the VM will get."
  value       = module.flowguard_vm.config_toml
}
