//! Outbound connections: the deployment's egress policy ([`egress`]) and the client for the
//! customer's AI endpoint ([`ai_client`]). Nothing else in the appliance opens connections.

pub mod ai_client;
pub mod egress;
