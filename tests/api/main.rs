//! One integration-test binary (zero-to-production style): every test starts the real
//! `flowguard` binary on 127.0.0.1:0 with its own temp data dir.

mod helpers;

mod ai;
mod audit;
mod bootstrap;
mod errors;
mod keys;
mod matrix;
mod members;
mod runs;
mod scim;
mod secrets;
mod throttle;
mod tls;
