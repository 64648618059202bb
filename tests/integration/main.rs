//! Integration tests against a real kube-apiserver (see e2e/cluster).
#![forbid(unsafe_code)]

mod cluster;
mod runbook;
mod support;
