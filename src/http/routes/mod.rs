//! Route registration. Every service registered here lands in the OpenAPI document
//! (utoipa-actix-web collects the paths from the registration itself), and every non-public
//! handler takes a `Require<perm::…>` guard.

mod applications;
mod audit;
mod auth;
mod license;
mod members;
pub(crate) mod ops;
mod platform;
mod tokens;

use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Register all routes.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(
            scope::scope("/api/v1")
                .service(ops::version)
                .service(ops::openapi)
                .service(auth::login)
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
                .service(audit::export)
                .service(audit::verify)
                .service(audit::signing_key)
                .service(audit::platform_list)
                .service(audit::platform_export)
                .service(audit::platform_verify)
                .service(platform::tenants)
                .service(platform::create_tenant)
                .service(platform::get_tenant)
                .service(platform::suspend_tenant)
                .service(platform::resume_tenant)
                .service(platform::set_plan)
                .service(platform::license)
                .service(platform::install_license)
                .service(platform::reload_license)
                .service(platform::revocations)
                .service(platform::revoke_license)
                .service(license::tenant_license)
                .service(license::notifications),
        );
}
