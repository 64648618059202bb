//! Test support shared by every integration test: one real control plane per
//! test run, a namespace per test, CRD installation, clients acting as
//! ServiceAccounts, deadline-bound waits, a controllable HTTP target and a
//! Prometheus handle.
//!
//! The control plane comes from `e2e/cluster/up.sh` (or the one named by
//! `LOCKKEEPER_CLUSTER_STATE`, as `e2e/cluster/with-cluster.sh` sets it).
//! Everything that talks to it is built per test: each `#[tokio::test]` has
//! its own runtime, and a `kube::Client` or `reqwest::Client` created on one
//! runtime stops working once that runtime is gone.
#![allow(
    dead_code,
    unused_imports,
    reason = "shared helpers; not every helper has a caller in every test module"
)]

mod control_plane;
mod crds;
mod events;
mod http_target;
mod namespace;
mod operator;
mod prometheus;
mod receiver;
mod smtp;
mod snapshots;
mod wait;

pub use control_plane::{TestCluster, cluster};
pub use crds::install_crds;
pub use events::*;
pub use http_target::HttpTarget;
pub use namespace::TestNamespace;
pub use operator::{Operator, OperatorOptions, free_port};
pub use prometheus::{Prometheus, RegisteredTarget, Sample};
pub use receiver::{ReceivedRequest, WebhookReceiver};
pub use smtp::{Mail, SmtpSink};
pub use snapshots::*;
pub use wait::{assert_stays, poll_until, wait_for, wait_for_deletion};

/// The label kwok's pod stages read (see `e2e/cluster/kwok/pod-stages.yaml`).
pub const BEHAVIOR_LABEL: &str = "e2e.lockkeeper.dev/behavior";
/// Pods labelled so run but never become Ready.
pub const NEVER_READY: &str = "never-ready";
/// Pods labelled so have containers that crash about once a second.
pub const RESTARTING: &str = "restarting";
/// Pods labelled so end Failed with exit code 1 after 1-2 s.
pub const FAIL: &str = "fail";

/// The repository root, where `e2e/` and `crds/` live.
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
