//! Gathers what the planner looks at: the colors' Deployments, the Services
//! the release steers, pods while the old version stops, and the revision
//! record a rollback may need.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, Deployment},
    core::v1::{Pod, Service},
};
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::{DeploymentState, Requests, ServiceState, World, render};
use crate::{
    api::{Color, Phase, Release, release::StrategyType},
    labels::{COLOR, RELEASE, REVISION, request},
};

/// Reading the world failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {kind} {namespace}/{name}: {source}")]
pub struct ObserveError {
    /// What was being read.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name or selector.
    pub name: String,
    /// Cause.
    pub source: kube::Error,
}

/// Reads everything the planner needs for `release`.
pub async fn world(client: &Client, release: &Release) -> Result<World, ObserveError> {
    let ns = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let err = |kind: &'static str, object: String| {
        let ns = ns.clone();
        move |source| ObserveError {
            kind,
            namespace: ns,
            name: object,
            source,
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    let mut world = World::default();
    for color in [Color::Blue, Color::Green] {
        let dname = render::deployment_name(&name, color);
        let state = deployments
            .get_opt(&dname)
            .await
            .map_err(err("Deployment", dname.clone()))?
            .map(|d| deployment_state(&d));
        match color {
            Color::Blue => world.blue = state,
            Color::Green => world.green = state,
        }
    }

    let strategy = &release.spec.strategy;
    let (traffic, preview) = match strategy.type_ {
        StrategyType::BlueGreen => {
            let bg = strategy.blue_green.as_ref();
            (
                bg.map(|b| b.active_service.clone()),
                bg.and_then(|b| b.preview_service.clone()),
            )
        }
        StrategyType::Recreate => (
            strategy.recreate.as_ref().and_then(|r| r.service.clone()),
            None,
        ),
    };
    if let Some(svc) = traffic {
        let found = services
            .get_opt(&svc)
            .await
            .map_err(err("Service", svc.clone()))?;
        world.traffic_service = Some(service_state(found.as_ref(), &name));
    }
    if let Some(svc) = preview {
        let found = services
            .get_opt(&svc)
            .await
            .map_err(err("Service", svc.clone()))?;
        world.preview_service = Some(service_state(found.as_ref(), &name));
    }

    let status = release.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Stopping)
        && let Some(target) = status.target_color
    {
        let old = target.other();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let selector = format!("{RELEASE}={name},{COLOR}={}", old.as_str());
        let list = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(err("Pods", selector))?;
        world.pods = Some((old, u32::try_from(list.items.len()).unwrap_or(u32::MAX)));
    }

    if let Some(stable) = status.stable_revision
        && matches!(status.phase, Some(Phase::RollingBack))
    {
        let records: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
        let rname = render::record_name(&name, stable);
        world.stable_record = records
            .get_opt(&rname)
            .await
            .map_err(err("ControllerRevision", rname))?
            .is_some();
    }
    Ok(world)
}

/// The planner's view of a Deployment.
pub fn deployment_state(d: &Deployment) -> DeploymentState {
    let spec = d.spec.clone();
    let status = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or_default();
    let revision = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(REVISION))
        .and_then(|r| r.parse().ok());
    let deadline_exceeded = status.conditions.iter().flatten().find_map(|c| {
        (c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        .then(|| {
            c.message
                .clone()
                .unwrap_or_else(|| "progress deadline exceeded".into())
        })
    });
    DeploymentState {
        revision,
        desired: spec.replicas.unwrap_or(1),
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        observed_current: status.observed_generation.unwrap_or(0) >= generation,
        deadline_exceeded,
        generation,
    }
}

/// The planner's view of a Service the release steers.
pub fn service_state(service: Option<&Service>, release: &str) -> ServiceState {
    let Some(service) = service else {
        return ServiceState::Missing;
    };
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return ServiceState::Unsteerable(
            "it is an ExternalName Service, which has no selector".into(),
        );
    }
    let selector: BTreeMap<String, String> = spec.selector.unwrap_or_default();
    let foreign: Vec<&String> = selector
        .keys()
        .filter(|k| k.as_str() != RELEASE && k.as_str() != COLOR)
        .collect();
    if !foreign.is_empty() {
        return ServiceState::Unsteerable(format!(
            "its selector also has {foreign:?}, set by someone else; remove spec.selector from the Service's manifest: the release sets the selector itself"
        ));
    }
    match selector.get(RELEASE) {
        Some(owner) if owner != release => {
            ServiceState::Unsteerable(format!("its selector belongs to release {owner}"))
        }
        _ => ServiceState::Selects(selector.get(COLOR).and_then(|c| match c.as_str() {
            "blue" => Some(Color::Blue),
            "green" => Some(Color::Green),
            _ => None,
        })),
    }
}

/// Requests people made through annotations, each naming a revision.
pub fn requests(release: &Release) -> Requests {
    let get = |key: &str| {
        release
            .annotations()
            .get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    Requests {
        promote: get(request::PROMOTE),
        abort: get(request::ABORT),
        retry: get(request::RETRY),
    }
}
