//! SCIM 2.0 (RFC 7643, RFC 7644) protocol logic for the User resource: the served schemas, input
//! normalisation and rendering, filters, PATCH. No HTTP and no SQL here: `service::scim` holds
//! the rules and audit, `store::scim` the SQL, `http::routes::scim` the wire.
//!
//! The `scim_v2` crate supplies the RFC schema definitions, the filter and PATCH-path grammars
//! and the protocol models; this module owns their meaning (case rules, Entra/Okta dialects).

pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;

pub use error::{ScimError, ScimType};

/// Core User schema URN (RFC 7643 §4.1).
pub const USER: &str = scim_v2::schema_urns::USER;
/// Enterprise User extension URN (RFC 7643 §4.3).
pub const ENTERPRISE_USER: &str = scim_v2::schema_urns::ENTERPRISE_USER;
/// PatchOp message URN (RFC 7644 §3.5.2).
pub const PATCH_OP: &str = scim_v2::schema_urns::PATCH_OP;
/// ListResponse message URN (RFC 7644 §3.4.2).
pub const LIST_RESPONSE: &str = scim_v2::schema_urns::LIST_RESPONSE;
/// SearchRequest message URN (RFC 7644 §3.4.3).
pub const SEARCH_REQUEST: &str = scim_v2::schema_urns::SEARCH_REQUEST;
/// Error message URN (RFC 7644 §3.12).
pub const ERROR: &str = scim_v2::schema_urns::ERROR;
