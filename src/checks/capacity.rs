//! Preflight capacity (runbook 1.4): do the namespace's ResourceQuotas and
//! the schedulable Nodes have room for the new color? Pure: the caller
//! lists the objects, this does the arithmetic.
//!
//! An estimate, on the side of the scheduler's basic filters: it counts
//! resource requests (cpu, memory, pods), `nodeSelector`, `NoSchedule` and
//! `NoExecute` taints, cordoned and not-Ready Nodes; it does not evaluate
//! affinity, topology spread or quota scopes. A "fits" is a good sign, not a
//! guarantee; a "does not fit" names what is short.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, ResourceQuota, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Measurement;
use super::quantity::{format_milli, quantity_milli};

/// Resource amounts in thousandths, by resource name (`cpu`, `memory`, ...).
pub type Amounts = BTreeMap<String, i128>;

/// What one pod of the new color asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    /// Requests (a container's limit stands in for a request it omits, as
    /// the API server defaults it).
    pub requests: Amounts,
    /// Limits.
    pub limits: Amounts,
}

type ResourceMap = BTreeMap<String, Quantity>;

fn add_all(into: &mut Amounts, from: &Amounts) {
    for (name, amount) in from {
        *into.entry(name.clone()).or_insert(0) += amount;
    }
}

fn max_all(into: &mut Amounts, from: &Amounts) {
    for (name, amount) in from {
        let entry = into.entry(name.clone()).or_insert(0);
        *entry = (*entry).max(*amount);
    }
}

fn parse_map(map: Option<&ResourceMap>, what: &str) -> Result<Amounts, String> {
    map.into_iter()
        .flatten()
        .map(|(name, q)| {
            quantity_milli(q)
                .map(|milli| (name.clone(), milli))
                .map_err(|e| format!("{what} {name}: {e}"))
        })
        .collect()
}

/// A pod's effective requests and limits, as the scheduler computes them:
/// the larger of the containers' sum and any one init container's, plus the
/// pod overhead.
pub fn pod_resources(spec: &PodSpec) -> Result<PodResources, String> {
    let container = |c: &k8s_openapi::api::core::v1::Container| -> Result<PodResources, String> {
        let resources = c.resources.as_ref();
        let limits = parse_map(
            resources.and_then(|r| r.limits.as_ref()),
            &format!("container {} limit", c.name),
        )?;
        let mut requests = limits.clone();
        requests.extend(parse_map(
            resources.and_then(|r| r.requests.as_ref()),
            &format!("container {} request", c.name),
        )?);
        Ok(PodResources { requests, limits })
    };
    let mut total = PodResources::default();
    for c in &spec.containers {
        let r = container(c)?;
        add_all(&mut total.requests, &r.requests);
        add_all(&mut total.limits, &r.limits);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container(c)?;
        max_all(&mut total.requests, &r.requests);
        max_all(&mut total.limits, &r.limits);
    }
    let overhead = parse_map(spec.overhead.as_ref(), "pod overhead")?;
    add_all(&mut total.requests, &overhead);
    add_all(&mut total.limits, &overhead);
    Ok(total)
}

/// The outcome of a capacity estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapacityReport {
    /// Whether the new color fits.
    pub fits: bool,
    /// How many of its pods the schedulable Nodes have room for (capped at
    /// the replicas asked for).
    pub node_room: u32,
    /// What is short, one entry per quota resource or for the Nodes.
    pub shortfalls: Vec<String>,
}

impl CapacityReport {
    /// As a preflight measurement.
    pub fn measurement(&self, replicas: u32) -> Measurement {
        let value = Some(format!(
            "room for {} of {replicas} pods on nodes",
            self.node_room
        ));
        if self.fits {
            Measurement::pass(
                value,
                format!("quotas and nodes have room for {replicas} new pods"),
            )
        } else {
            Measurement::fail(value, self.shortfalls.join("; "))
        }
    }
}

/// What a quota resource name limits, and how much of it one pod uses.
fn pod_usage(resource: &str, pod: &PodResources) -> Option<i128> {
    match resource {
        "pods" | "count/pods" => Some(1000),
        "cpu" | "memory" | "ephemeral-storage" => {
            Some(pod.requests.get(resource).copied().unwrap_or(0))
        }
        _ => {
            if let Some(name) = resource.strip_prefix("requests.") {
                Some(pod.requests.get(name).copied().unwrap_or(0))
            } else {
                resource
                    .strip_prefix("limits.")
                    .map(|name| pod.limits.get(name).copied().unwrap_or(0))
            }
        }
    }
}

fn quota_shortfalls(
    pod: &PodResources,
    replicas: u32,
    quotas: &[ResourceQuota],
) -> Result<Vec<String>, String> {
    let mut shortfalls = Vec::new();
    for quota in quotas {
        let name = quota.metadata.name.as_deref().unwrap_or("<unnamed>");
        let status = quota.status.as_ref();
        let hard = status
            .and_then(|s| s.hard.as_ref())
            .or_else(|| quota.spec.as_ref().and_then(|s| s.hard.as_ref()));
        let hard = parse_map(hard, &format!("ResourceQuota {name} hard"))?;
        let used = parse_map(
            status.and_then(|s| s.used.as_ref()),
            &format!("ResourceQuota {name} used"),
        )?;
        for (resource, limit) in &hard {
            let Some(per_pod) = pod_usage(resource, pod) else {
                continue;
            };
            let is_compute = resource != "pods" && resource != "count/pods";
            if is_compute && per_pod == 0 {
                // The API server rejects pods that omit what a quota limits.
                shortfalls.push(format!(
                    "ResourceQuota {name} limits {resource}, but the pods do not set it, so they would be rejected"
                ));
                continue;
            }
            let need = per_pod * i128::from(replicas);
            let left = limit - used.get(resource).copied().unwrap_or(0);
            if need > left {
                shortfalls.push(format!(
                    "ResourceQuota {name}: {resource} needs {} ({replicas} × {}), {} left of {}",
                    format_milli(resource, need),
                    format_milli(resource, per_pod),
                    format_milli(resource, left.max(0)),
                    format_milli(resource, *limit),
                ));
            }
        }
    }
    Ok(shortfalls)
}

fn tolerated(tolerations: &[Toleration], key: &str, value: Option<&str>, effect: &str) -> bool {
    tolerations.iter().any(|t| {
        let key_matches = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == key,
        };
        let value_matches = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == value.unwrap_or(""),
        };
        let effect_matches = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == effect);
        key_matches && value_matches && effect_matches
    })
}

/// Why a node takes none of the new pods, if it does not.
fn unschedulable(node: &Node, spec: &PodSpec) -> Option<String> {
    let node_spec = node.spec.as_ref();
    if node_spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Some("cordoned".to_owned());
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        return Some("not Ready".to_owned());
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    for taint in node_spec
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
    {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerated(
                tolerations,
                &taint.key,
                taint.value.as_deref(),
                &taint.effect,
            )
        {
            return Some(format!("taint {}:{}", taint.key, taint.effect));
        }
    }
    let labels = node.metadata.labels.as_ref();
    for (key, value) in spec.node_selector.iter().flatten() {
        if labels.and_then(|l| l.get(key)) != Some(value) {
            return Some(format!("nodeSelector {key}={value}"));
        }
    }
    None
}

/// How many more pods asking for `requests` fit on `node`, given the pods
/// already bound to it, and what limits it.
fn node_room(node: &Node, pods: &[Pod], requests: &Amounts) -> Result<(i128, String), String> {
    let name = node.metadata.name.as_deref().unwrap_or("<unnamed>");
    let allocatable = parse_map(
        node.status.as_ref().and_then(|s| s.allocatable.as_ref()),
        &format!("Node {name} allocatable"),
    )?;
    let mut used = Amounts::new();
    let mut pod_count: i128 = 0;
    for pod in pods {
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        if spec.node_name.as_deref() != Some(name) {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        pod_count += 1;
        add_all(&mut used, &pod_resources(spec)?.requests);
    }
    let mut room = allocatable
        .get("pods")
        .map_or(i128::MAX, |pods| (pods / 1000 - pod_count).max(0));
    let mut limit = "pods".to_owned();
    for (resource, per_pod) in requests {
        if *per_pod <= 0 {
            continue;
        }
        // A resource the node does not offer at all (an extended resource)
        // leaves room for none.
        let free = allocatable.get(resource).copied().unwrap_or(0)
            - used.get(resource).copied().unwrap_or(0);
        let fits = (free / per_pod).max(0);
        if fits < room {
            room = fits;
            limit = resource.clone();
        }
    }
    Ok((room, limit))
}

/// Whether `replicas` pods of `template` fit in the namespace's `quotas`
/// and on the schedulable `nodes`, given the cluster's `pods` (for what the
/// Nodes already run). An error names a quantity that does not parse.
pub fn fits(
    template: &PodSpec,
    replicas: u32,
    quotas: &[ResourceQuota],
    nodes: &[Node],
    pods: &[Pod],
) -> Result<CapacityReport, String> {
    let pod = pod_resources(template).map_err(|e| format!("reading the pod template: {e}"))?;
    let mut shortfalls = quota_shortfalls(&pod, replicas, quotas)?;
    let wanted = i128::from(replicas);
    let mut total: i128 = 0;
    let mut notes = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("<unnamed>");
        if let Some(why) = unschedulable(node, template) {
            notes.push(format!("{name}: 0 ({why})"));
            continue;
        }
        let (room, limit) = node_room(node, pods, &pod.requests)?;
        total = total.saturating_add(room);
        if room < wanted {
            notes.push(format!("{name}: {room} ({limit})"));
        }
    }
    let node_room = u32::try_from(total.min(wanted)).unwrap_or(replicas);
    if total < wanted {
        shortfalls.push(format!(
            "the nodes have room for {total} of {replicas} new pods{}",
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            }
        ));
    }
    Ok(CapacityReport {
        fits: shortfalls.is_empty(),
        node_room,
        shortfalls,
    })
}

#[cfg(test)]
#[path = "capacity_tests.rs"]
mod tests;
