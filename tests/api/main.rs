//! One integration-test binary (zero-to-production style): every test starts the real
//! `flowguard` binary on 127.0.0.1:0 with its own temp data dir.

mod helpers;

mod audit;
mod audit_export;
mod bootstrap;
mod errors;
mod keys;
mod license;
mod matrix;
mod members;
mod residency;
mod secrets;
mod throttle;
mod tls;
