//! FlowGuard Appliance: the library behind the single `flowguard` binary.
//!
//! Layering (see `../shared/STYLE.md`): `http` parses and maps, `service` holds rules,
//! permission checks and audit writes, `store` holds SQL, `crypto` holds every key operation.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod agent;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod fault;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod net;
pub mod runner;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod workers;
