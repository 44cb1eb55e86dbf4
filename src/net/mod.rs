//! Outbound connections: every connection the appliance opens to a customer system (the LDAP
//! directory, the AI endpoint, later ticket servers) goes through the deployment's egress policy
//! ([`egress`]) and the one TLS client configuration ([`tls`]: ring only, `ca_pem` anchors and
//! pins, failures named by kind); [`ai_client`] is the client for the customer's AI endpoint,
//! [`https`] the small request helper of OpenID Connect (discovery, JWKS, token endpoint),
//! [`tracker`] the transport to the customer's ticket tracker.

pub mod ai_client;
pub mod egress;
pub mod https;
pub mod tls;
pub mod tracker;

pub use egress::{ConnectError, EgressDenied, EgressPolicy};
