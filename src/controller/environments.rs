//! The Environment controller: each Environment's status says how many
//! namespaces it governs and whether its rules can be obeyed (no namespace
//! selected by another Environment too, no promotion cycle).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{info, warn};

use super::conditions::{self, Desired};
use crate::{
    api::{Environment, EnvironmentStatus},
    environment::{promotion_cycle, selects},
    labels::FIELD_MANAGER,
};

/// Writing an Environment's status failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} for Environment {name}: {source}")]
pub struct EnvironmentError {
    /// What was being done.
    pub action: &'static str,
    /// The Environment.
    pub name: String,
    /// Cause.
    pub source: kube::Error,
}

/// What an Environment's status should say, from every Environment and
/// every namespace's labels. Pure.
pub fn status_of(
    env: &Environment,
    environments: &[Environment],
    namespaces: &[Namespace],
    previous: &EnvironmentStatus,
    now: Timestamp,
) -> EnvironmentStatus {
    let generation = env.metadata.generation.unwrap_or_default();
    let name = env.name_any();
    let labels = |ns: &Namespace| ns.metadata.labels.clone().unwrap_or_default();
    let mine: Vec<&Namespace> = namespaces
        .iter()
        .filter(|ns| selects(&env.spec.namespace_selector, &labels(ns)))
        .collect();
    let mut overlaps = BTreeSet::new();
    for ns in &mine {
        for other in environments.iter().filter(|o| o.name_any() != name) {
            if selects(&other.spec.namespace_selector, &labels(ns)) {
                overlaps.insert(format!(
                    "{} (namespace {})",
                    other.name_any(),
                    ns.name_any()
                ));
            }
        }
    }
    let mut problems = Vec::new();
    if !overlaps.is_empty() {
        problems.push(format!(
            "selects namespaces another Environment selects too: {}; their Releases stall until the selectors no longer overlap",
            overlaps.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(cycle) = promotion_cycle(environments, &name) {
        problems.push(format!(
            "its promotion order has a cycle: {}",
            cycle.join(" → ")
        ));
    }
    for upstream in env.spec.promotion.iter().flat_map(|p| p.from.iter()) {
        if !environments.iter().any(|e| &e.name_any() == upstream) {
            problems.push(format!(
                "promotes from Environment {upstream}, which does not exist: its Releases wait"
            ));
        }
    }
    let mut status = EnvironmentStatus {
        observed_generation: Some(generation),
        conditions: previous.conditions.clone(),
        namespaces: i64::try_from(mine.len()).ok(),
    };
    let conds = &mut status.conditions;
    if problems.is_empty() {
        conditions::remove(conds, conditions::STALLED);
        conditions::set(
            conds,
            Desired::truthy(
                conditions::READY,
                "Governing",
                format!("governs {} namespace(s)", mine.len()),
            ),
            generation,
            now,
        );
    } else {
        let message = problems.join("; ");
        conditions::set(
            conds,
            Desired::truthy(conditions::STALLED, "InvalidRules", message.clone()),
            generation,
            now,
        );
        conditions::set(
            conds,
            Desired::falsy(conditions::READY, "InvalidRules", message),
            generation,
            now,
        );
    }
    status
}

async fn reconcile(env: Arc<Environment>, client: Arc<Client>) -> Result<Action, EnvironmentError> {
    let name = env.name_any();
    let err = |action: &'static str| {
        let name = name.clone();
        move |source| EnvironmentError {
            action,
            name,
            source,
        }
    };
    let environments = Api::<Environment>::all((*client).clone())
        .list(&ListParams::default())
        .await
        .map_err(err("listing Environments"))?;
    let namespaces = Api::<Namespace>::all((*client).clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(err("listing namespaces"))?;
    let namespaces: Vec<Namespace> = namespaces
        .items
        .into_iter()
        .map(|m| Namespace {
            metadata: m.metadata,
            ..Namespace::default()
        })
        .collect();
    let previous = env.status.clone().unwrap_or_default();
    let status = status_of(
        &env,
        &environments.items,
        &namespaces,
        &previous,
        Timestamp::now(),
    );
    if status != previous {
        let patch = json!({
            "apiVersion": "lockkeeper.dev/v1alpha1",
            "kind": "Environment",
            "status": status,
        });
        Api::<Environment>::all((*client).clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(err("writing the status"))?;
    }
    // Namespaces come and go without an event here; look again now and then.
    Ok(Action::requeue(Duration::from_secs(60)))
}

fn error_policy(_: Arc<Environment>, error: &EnvironmentError, _: Arc<Client>) -> Action {
    warn!(%error, "Environment reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the Environment controller until `shutdown` is cancelled. Every
/// Environment is looked at again when any changes: overlaps and cycles
/// involve several.
pub async fn run(client: Client, shutdown: tokio_util::sync::CancellationToken) {
    info!("starting the Environment controller");
    let api = Api::<Environment>::all(client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let every = controller.store();
    controller
        .watches(api, watcher::Config::default(), move |_: Environment| {
            every
                .state()
                .into_iter()
                .map(|e| kube::runtime::reflector::ObjectRef::from_obj(&*e))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, selector: serde_json::Value, extra: serde_json::Value) -> Environment {
        let mut spec = json!({"namespaceSelector": selector});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        Environment::new(
            name,
            serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn ns(name: &str, env: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"env": env}}}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn condition(status: &EnvironmentStatus, type_: &str) -> Option<(String, String)> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.message.clone()))
    }

    #[test]
    fn counts_namespaces_and_reports_overlaps_cycles_and_missing_upstreams() {
        let now = Timestamp::now();
        let prod = env(
            "prod",
            json!({"matchLabels": {"env": "prod"}}),
            json!({"promotion": {"from": ["staging"]}}),
        );
        let staging = env(
            "staging",
            json!({"matchLabels": {"env": "staging"}}),
            json!({}),
        );
        let namespaces = [ns("a", "prod"), ns("b", "prod"), ns("c", "staging")];
        let all = [prod.clone(), staging.clone()];
        let status = status_of(&prod, &all, &namespaces, &EnvironmentStatus::default(), now);
        assert_eq!(status.namespaces, Some(2));
        assert_eq!(
            condition(&status, "Ready").map(|c| c.0).as_deref(),
            Some("True")
        );

        let greedy = env(
            "everything",
            json!({}),
            json!({"promotion": {"from": ["nowhere"]}}),
        );
        let all = [prod.clone(), staging, greedy.clone()];
        let status = status_of(
            &greedy,
            &all,
            &namespaces,
            &EnvironmentStatus::default(),
            now,
        );
        let (stalled, message) = condition(&status, "Stalled").unwrap_or_default();
        assert_eq!(stalled, "True");
        assert!(
            message.contains("prod (namespace a)") && message.contains("nowhere"),
            "{message}"
        );

        let looped = env(
            "staging",
            json!({"matchLabels": {"env": "staging"}}),
            json!({"promotion": {"from": ["prod"]}}),
        );
        let all = [prod.clone(), looped];
        let status = status_of(&prod, &all, &namespaces, &EnvironmentStatus::default(), now);
        let (_, message) = condition(&status, "Stalled").unwrap_or_default();
        assert!(message.contains("prod → staging → prod"), "{message}");
    }
}
