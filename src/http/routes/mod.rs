//! Route registration. Every service registered here lands in the OpenAPI document
//! (utoipa-actix-web collects the paths from the registration itself), and every non-public
//! handler takes a `Require<perm::…>` guard.

mod ai_endpoint;
mod applications;
mod audit;
mod auth;
mod flows;
mod integrations;
mod keys;
mod license;
mod live;
mod members;
pub(crate) mod ops;
mod platform;
mod runs;
pub(crate) mod scim;
mod sso;
mod tokens;

use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Register all routes.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(runs::shot)
        .service(
            scope::scope("/api/v1")
                .service(ops::version)
                .service(ops::openapi)
                .service(auth::login)
                .service(auth::ldap_login)
                .service(auth::oidc_start)
                .service(auth::oidc_callback)
                .service(auth::oidc_available)
                .service(auth::methods)
                .service(auth::logout)
                .service(auth::me)
                .service(auth::change_password)
                .service(applications::list)
                .service(applications::create)
                .service(applications::get)
                .service(applications::update)
                .service(applications::delete)
                .service(members::list)
                .service(members::add)
                .service(members::change_role)
                .service(members::remove)
                .service(tokens::list_agent)
                .service(tokens::create_agent)
                .service(tokens::revoke_agent)
                .service(tokens::list_scim)
                .service(tokens::create_scim)
                .service(tokens::revoke_scim)
                .service(tokens::agent_whoami)
                .service(audit::list)
                .service(platform::tenants)
                .service(flows::create)
                .service(flows::list)
                .service(flows::get)
                .service(flows::version)
                .service(flows::update)
                .service(flows::remove)
                .service(flows::set_schedule)
                .service(flows::clear_schedule)
                .service(flows::create_webhook)
                .service(flows::list_webhooks)
                .service(flows::revoke_webhook)
                .service(flows::list_variables)
                .service(flows::get_variable)
                .service(flows::put_variable)
                .service(flows::delete_variable)
                .service(runs::trigger)
                .service(runs::webhook)
                .service(runs::cancel)
                .service(runs::list)
                .service(runs::get)
                .service(runs::runners)
                .service(live::run_events)
                .service(live::app_run_events)
                .service(runs::screenshot_url)
                .service(runs::claim)
                .service(runs::report_step)
                .service(runs::heartbeat)
                .service(runs::complete)
                .service(runs::upload)
                .service(sso::get_ldap)
                .service(sso::put_ldap)
                .service(sso::dry_run)
                .service(sso::test_connection)
                .service(sso::get_oidc)
                .service(sso::put_oidc)
                .service(sso::delete_oidc)
                .service(sso::oidc_test_connection)
                .service(sso::oidc_dry_run)
                .service(keys::status)
                .service(keys::rotate)
                .service(runs::agent_trigger)
                .service(runs::agent_get)
                .service(audit::export)
                .service(audit::verify)
                .service(audit::signing_key)
                .service(audit::platform_list)
                .service(audit::platform_export)
                .service(audit::platform_verify)
                .service(platform::create_tenant)
                .service(platform::get_tenant)
                .service(platform::suspend_tenant)
                .service(platform::resume_tenant)
                .service(platform::set_plan)
                .service(platform::license)
                .service(platform::install_license)
                .service(platform::reload_license)
                .service(platform::start_trial)
                .service(platform::revocations)
                .service(platform::revoke_license)
                .service(platform::backups)
                .service(platform::key_status)
                .service(platform::start_backup)
                .service(license::tenant_license)
                .service(license::notifications)
                .service(ai_endpoint::get)
                .service(ai_endpoint::put)
                .service(ai_endpoint::remove)
                .service(ai_endpoint::test)
                .service(integrations::get)
                .service(integrations::put)
                .service(integrations::remove)
                .service(integrations::test)
                .service(integrations::file_ticket),
        )
        .service(
            scope::scope("/scim/v2")
                .service(scim::list_users)
                .service(scim::create_user)
                .service(scim::search_users)
                .service(scim::search_root)
                .service(scim::get_user)
                .service(scim::replace_user)
                .service(scim::patch_user)
                .service(scim::delete_user)
                .service(scim::service_provider_config)
                .service(scim::list_schemas)
                .service(scim::get_schema)
                .service(scim::list_resource_types)
                .service(scim::get_resource_type),
        );
}
