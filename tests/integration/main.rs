//! Integration tests against a real kube-apiserver (see e2e/cluster).
#![forbid(unsafe_code)]

mod api;
mod bench;
mod checks;
mod cluster;
mod environments;
mod install;
mod leader;
mod runbook;
mod support;
mod verify;
