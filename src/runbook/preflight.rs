//! Preflight (runbook 1.2, 1.4): the dependencies a release needs and room
//! for its new color, checked before anything changes. `standing` is pure;
//! `check_due` takes the measurements.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        core::v1::{Node, Pod, ResourceQuota},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    api::{
        Release, ReleaseSpec,
        checks::{Dependency, Preflight},
        status::DependencyStatus,
    },
    checks::{self, measure::Measurement},
    controller::validate::Validated,
};

/// How long preflight may take when the spec says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a failing dependency is tried again.
pub const RETRY: Duration = Duration::from_secs(2);
/// The name the capacity check is reported under.
pub const CAPACITY: &str = "capacity";

/// The declared preflight, when it asks for anything.
pub fn declared(spec: &ReleaseSpec) -> Option<&Preflight> {
    spec.preflight
        .as_ref()
        .filter(|p| !p.dependencies.is_empty() || p.capacity)
}

/// The names preflight reports on, in order.
pub fn names(preflight: &Preflight) -> Vec<String> {
    let mut names: Vec<String> = preflight
        .dependencies
        .iter()
        .map(|d| d.name.clone())
        .collect();
    if preflight.capacity {
        names.push(CAPACITY.to_owned());
    }
    names
}

/// Whether `name` should be checked (again) at `now`.
pub fn due(statuses: &[DependencyStatus], name: &str, now: Timestamp) -> bool {
    match statuses.iter().find(|s| s.name == name) {
        None => true,
        Some(s) if s.ready => false,
        Some(s) => s
            .checked_at
            .as_ref()
            .is_none_or(|t| t.0.checked_add(RETRY).unwrap_or(t.0) <= now),
    }
}

/// How preflight stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Everything is reachable and fits.
    Passed(String),
    /// The timeout passed with something still failing.
    Failed(String),
    /// Still waiting on something.
    Waiting(String),
}

/// The verdict from the recorded results.
pub fn standing(
    preflight: &Preflight,
    statuses: &[DependencyStatus],
    since: Timestamp,
    now: Timestamp,
) -> Standing {
    let names = names(preflight);
    let failing: Vec<String> = names
        .iter()
        .filter(|n| !statuses.iter().any(|s| &s.name == *n && s.ready))
        .map(|n| {
            let why = statuses
                .iter()
                .find(|s| &s.name == n)
                .and_then(|s| s.message.clone());
            format!("{n}: {}", why.unwrap_or_else(|| "not checked yet".into()))
        })
        .collect();
    let ready = names.len() - failing.len();
    if failing.is_empty() {
        return Standing::Passed(format!("{ready}/{} preflight checks passed", names.len()));
    }
    let timeout = preflight.timeout.map_or(DEFAULT_TIMEOUT, Into::into);
    if now >= since.checked_add(timeout).unwrap_or(since) {
        return Standing::Failed(format!(
            "not ready after {}: {}",
            crate::api::Duration::from(timeout),
            failing.join("; ")
        ));
    }
    Standing::Waiting(format!(
        "{ready}/{} ready; waiting for {}",
        names.len(),
        failing.join("; ")
    ))
}

/// Records a result.
pub fn record(statuses: &mut Vec<DependencyStatus>, name: &str, m: &Measurement, now: Timestamp) {
    let entry = DependencyStatus {
        name: name.to_owned(),
        ready: m.outcome == checks::measure::Outcome::Pass,
        message: Some(m.message.clone()),
        checked_at: Some(Time(now)),
    };
    match statuses.iter_mut().find(|s| s.name == name) {
        Some(existing) => *existing = entry,
        None => statuses.push(entry),
    }
}

/// Checks one dependency.
pub async fn check(
    client: &Client,
    http: &reqwest::Client,
    release: &Release,
    dependency: &Dependency,
    timeout: Duration,
) -> Measurement {
    let per_check = timeout.min(Duration::from_secs(10));
    if let Some(tcp) = &dependency.tcp {
        return checks::dependency::tcp(tcp, per_check).await;
    }
    if let Some(probe) = &dependency.http {
        return checks::dependency::http(http, probe, per_check).await;
    }
    if let Some(dns) = &dependency.dns {
        return checks::dependency::dns(dns, per_check).await;
    }
    if let Some(service) = &dependency.service {
        let ns = service
            .namespace
            .clone()
            .unwrap_or_else(|| release.namespace().unwrap_or_default());
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let selector = format!("kubernetes.io/service-name={}", service.name);
        return match slices.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => checks::dependency::service_ready(
                &service.name,
                &list.items,
                service.min_ready.unwrap_or(1),
            ),
            Err(e) => Measurement::fail(
                None,
                format!("listing EndpointSlices of {ns}/{}: {e}", service.name),
            ),
        };
    }
    Measurement::fail(None, "the dependency names no probe")
}

/// Whether the new color's pods fit in the namespace's quotas and on the
/// schedulable nodes.
pub async fn capacity(client: &Client, release: &Release, validated: &Validated) -> Measurement {
    let ns = release.namespace().unwrap_or_default();
    let replicas = u32::try_from(release.spec.workload.replicas.max(0)).unwrap_or(0);
    let Some(pod_spec) = validated.template.spec.as_ref() else {
        return Measurement::fail(None, "the pod template has no spec");
    };
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default();
    let (quotas, nodes, pods) = match (
        quotas.list(&lp).await,
        nodes.list(&lp).await,
        pods.list(&lp).await,
    ) {
        (Ok(q), Ok(n), Ok(p)) => (q.items, n.items, p.items),
        (Err(e), _, _) => {
            return Measurement::inconclusive(None, format!("listing ResourceQuotas in {ns}: {e}"));
        }
        (_, Err(e), _) => return Measurement::inconclusive(None, format!("listing Nodes: {e}")),
        (_, _, Err(e)) => return Measurement::inconclusive(None, format!("listing Pods: {e}")),
    };
    match checks::capacity::fits(pod_spec, replicas, &quotas, &nodes, &pods) {
        Ok(report) => report.measurement(replicas),
        Err(e) => Measurement::fail(None, e),
    }
}
