//! Directory login over LDAP (issue 7): per-tenant configuration, the directory conversation
//! (LDAPS or StartTLS only, search-then-bind), group resolution with nested groups, and the
//! `group DN → role` decision. The service layer (`service::ldap`) orchestrates these, writes
//! users and audit rows; nothing here touches the stores.
//!
//! Escaping (case file C07): login names go into filters through [`filter::render`]
//! (RFC 4515); DNs are compared with [`dn::Dn`] (RFC 4514) and used as the directory returned
//! them.

pub mod client;
pub mod config;
pub mod dn;
pub mod filter;
pub mod mapping;

pub use client::{DirError, DirSession, Groups, Lookup, NestedMethod, Secrets, UserEntry};
pub use config::{LdapConfig, LdapConfigInput, LdapConfigView};
