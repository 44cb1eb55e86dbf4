//! One integration-test binary (zero-to-production style): every test starts the real
//! `flowguard` binary on 127.0.0.1:0 with its own temp data dir.

mod helpers;

mod agent;
mod ai;
mod architecture;
mod audit;
mod audit_export;
mod backup;
mod bootstrap;
mod dashboard;
mod egress_proof;
mod errors;
mod hardening;
mod keys;
mod ldap;
mod ldap_support;
mod license;
mod matrix;
mod members;
mod newuser;
mod oidc;
mod residency;
mod rotation;
mod runner;
mod runs;
mod scim;
mod secrets;
mod storage;
mod throttle;
mod tickets;
mod tls;
mod upgrade;
