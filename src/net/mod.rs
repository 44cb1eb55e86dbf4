//! Outbound networking: every connection the appliance opens to a customer system (LDAP today,
//! AI endpoints and ticket servers later) goes through [`egress::EgressPolicy`].

pub mod egress;

pub use egress::{ConnectError, EgressDenied, EgressPolicy};
