//! Integration tests against a real kube-apiserver (see e2e/cluster).
#![forbid(unsafe_code)]

mod api;
mod bench;
mod checks;
mod cluster;
mod data;
mod environments;
mod gates;
mod install;
mod leader;
mod notify;
mod notify_delivery;
mod records;
mod runbook;
mod snapshot_double;
mod support;
mod verify;
