output "user_data" {
  description = "cloud-init user_data (#cloud-config). Pass it to the VM resource of your platform (vSphere guestinfo, OpenStack, libvirt cloudinit disk, ...). Sensitive when it carries the master key or license."
  value       = local.user_data
  sensitive   = true
}

output "user_data_base64" {
  description = "user_data, base64-encoded, for platforms that want it so."
  value       = base64encode(local.user_data)
  sensitive   = true
}

output "config_toml" {
  description = "The flowguard.toml the VM will get (contains no secret)."
  value       = local.config_toml
}
