//! Lockkeeper: a Kubernetes operator that runs a whole release runbook from one
//! declarative `Release`, gated by an admin-owned `Environment`.
#![forbid(unsafe_code)]

pub mod api;
pub mod checks;
pub mod controller;
pub mod crd;
pub mod environment;
pub mod freeze;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod notifier;
pub mod runbook;
pub mod server;
pub mod telemetry;
