output "namespace" {
  description = "Namespace the appliance runs in."
  value       = local.namespace
}

output "release_name" {
  description = "Helm release name."
  value       = helm_release.flowguard.name
}

output "service_name" {
  description = "ClusterIP Service of the HTTPS API."
  value       = local.fullname
}

output "master_key_secret" {
  description = "Secret holding the master key: back it up."
  value       = local.master_key_secret
}

output "tenant_create_command" {
  description = "Command creating a tenant and its Owner on the first replica (prints the one-time password once)."
  value       = "kubectl -n ${local.namespace} exec -it ${local.fullname}-0 -- flowguard tenant create --config /etc/flowguard/config/flowguard.toml --name NAME --owner-email EMAIL --json"
}
