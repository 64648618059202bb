//! Gathers what the planner looks at: the colors' Deployments, the Services
//! the release steers, pods while the old version stops, and the revision
//! record a rollback may need.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, Deployment},
    batch::v1::Job,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, LogParams},
};

use super::{
    BackupSources, DeploymentState, JobKind, JobState, Requests, ServiceState, SnapshotState,
    World, render, steps::Step,
};
use crate::{
    api::{
        Color, Phase, Release, ReleaseStatus,
        release::{BackupSpec, StrategyType},
        status::StepState,
    },
    labels::{BACKUP_OF, COLOR, JOB, RELEASE, REVISION, ROLE, request},
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

    if status.phase == Some(Phase::RollingBack) {
        // The stable revision's record (to recreate the previous version) and
        // this revision's (its undo runs what it declared).
        let records: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
        let read = |revision: i64| {
            let rname = render::record_name(&name, revision);
            let records = records.clone();
            let err = err("ControllerRevision", rname.clone());
            async move { records.get_opt(&rname).await.map_err(err) }
        };
        if let Some(stable) = status.stable_revision {
            world.stable_record = read(stable).await?.is_some();
        }
        if let Some(revision) = status.revision {
            world.record = read(revision)
                .await?
                .and_then(|r| render::shipped_from_record(&r).ok());
        }
    }
    gather_runbook(client, release, &status, &mut world).await?;
    Ok(world)
}

/// Whether `step` of the recorded run has yet to finish.
fn open(status: &ReleaseStatus, step: Step) -> bool {
    status.steps.iter().any(|s| {
        s.name == step.name() && matches!(s.state, StepState::Pending | StepState::Running)
    })
}

/// The step a runbook Job belongs to.
fn step_of(kind: &JobKind) -> Step {
    match kind {
        JobKind::Backup(_) => Step::Backup,
        JobKind::Restore(_) => Step::RestoreData,
        JobKind::ConfigCheck => Step::Config,
        JobKind::Migration | JobKind::MigrationVerify => Step::Migrate,
        JobKind::MigrationRollback => Step::RollBackMigration,
    }
}

/// The runbook Jobs, backup sources, VolumeSnapshots and config of the
/// recorded revision, each looked up only while a step needs it.
async fn gather_runbook(
    client: &Client,
    release: &Release,
    status: &ReleaseStatus,
    world: &mut World,
) -> Result<(), ObserveError> {
    let Some(revision) = status.revision else {
        return Ok(());
    };
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
    let spec = &release.spec;
    let job_steps = [
        Step::Backup,
        Step::Config,
        Step::Migrate,
        Step::RollBackMigration,
        Step::RestoreData,
    ];
    if job_steps.iter().any(|s| open(status, *s)) {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let selector = format!("{RELEASE}={name},{REVISION}={revision},{JOB}");
        let list = jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(err("Jobs", selector))?;
        let kinds = job_kinds(spec);
        for job in list.items {
            let Some(kind) = job
                .labels()
                .get(JOB)
                .and_then(|what| kinds.iter().find(|k| &k.what() == what))
                .cloned()
            else {
                continue;
            };
            let mut state = job_state(&job);
            if let JobState::Failed(why) = &state
                && open(status, step_of(&kind))
            {
                let detail = failure_detail(client, &ns, &job.name_any()).await;
                state = JobState::Failed(match detail {
                    Some(detail) => format!("{why}; {detail}"),
                    None => why.clone(),
                });
            }
            world.jobs.insert(kind, state);
        }
    }

    let backed_up = status.backups.iter().any(|b| b.revision == revision);
    if let Some(backup) = &spec.backup
        && open(status, Step::Backup)
    {
        if !backed_up {
            world.backup_sources = Some(backup_sources(client, &ns, backup).await?);
        }
        if !backup.volumes.is_empty() && backed_up {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &render::volume_snapshot_resource());
            let selector = format!("{RELEASE}={name},{REVISION}={revision},{ROLE}=backup");
            let list = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(err("VolumeSnapshots", selector))?;
            for snapshot in list.items {
                if let Some(claim) = snapshot.annotations().get(BACKUP_OF) {
                    world
                        .snapshots
                        .insert(claim.clone(), snapshot_state(&snapshot));
                }
            }
        }
    }

    if let Some(config) = &spec.config
        && !config.config_maps.is_empty()
        && open(status, Step::Config)
    {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let selector = format!("{RELEASE}={name},{REVISION}={revision},{ROLE}=config");
        let list = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(err("ConfigMaps", selector))?;
        let have: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
        world.config_written = config
            .config_maps
            .iter()
            .all(|c| have.contains(&render::config_map_name(&c.name, revision)));
    }
    Ok(())
}

/// Every runbook Job the spec can run.
fn job_kinds(spec: &crate::api::ReleaseSpec) -> Vec<JobKind> {
    let mut kinds = vec![
        JobKind::ConfigCheck,
        JobKind::Migration,
        JobKind::MigrationVerify,
        JobKind::MigrationRollback,
    ];
    for job in spec.backup.iter().flat_map(|b| b.jobs.iter()) {
        kinds.push(JobKind::Backup(job.name.clone()));
        kinds.push(JobKind::Restore(job.name.clone()));
    }
    kinds
}

/// Where a Job is, from its terminal conditions.
pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let holds = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(c) = holds("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        return JobState::Failed(match &c.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        });
    }
    JobState::Running
}

/// What a failed Job's last failed pod says: its containers' exit and the
/// tail of the log, when the cluster serves logs.
async fn failure_detail(client: &Client, ns: &str, job: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .ok()?;
    let pod = list
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))?;
    let pod_name = pod.name_any();
    let mut detail = Vec::new();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut failed_container = None;
    for c in statuses {
        if let Some(t) = c.state.and_then(|s| s.terminated)
            && t.exit_code != 0
        {
            let mut line = format!("container {} exited {}", c.name, t.exit_code);
            if let Some(reason) = t.reason {
                line.push_str(&format!(" ({reason})"));
            }
            if let Some(message) = t.message.filter(|m| !m.trim().is_empty()) {
                line.push_str(&format!(": {}", message.trim()));
            }
            detail.push(line);
            failed_container.get_or_insert(c.name);
        }
    }
    let params = LogParams {
        container: failed_container,
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(LOG_TAIL_BYTES),
        ..LogParams::default()
    };
    match tokio::time::timeout(LOG_TIMEOUT, pods.logs(&pod_name, &params)).await {
        Ok(Ok(log)) if !log.trim().is_empty() => {
            detail.push(format!("log tail: {}", log.trim_end()));
        }
        Ok(Ok(_)) => {}
        Ok(Err(kube::Error::Api(status))) => {
            detail.push(format!(
                "the pod's log could not be read: {}",
                status.message
            ));
        }
        Ok(Err(e)) => {
            let mut why = e.to_string();
            why.truncate(200);
            detail.push(format!("the pod's log could not be read: {why}"));
        }
        Err(_) => detail.push("the pod's log could not be read in time".into()),
    }
    Some(format!("pod {pod_name}: {}", detail.join("; ")))
}

/// Lines of a failed Job's log kept in its failure message.
const LOG_TAIL_LINES: i64 = 20;
/// Bytes of a failed Job's log kept at most.
const LOG_TAIL_BYTES: i64 = 2048;
/// How long reading a failed Job's log may take.
const LOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Where a VolumeSnapshot is, from its status.
pub fn snapshot_state(snapshot: &DynamicObject) -> SnapshotState {
    let status = &snapshot.data["status"];
    if status["readyToUse"].as_bool() == Some(true) {
        return SnapshotState::Ready;
    }
    match status["error"]["message"].as_str() {
        Some(message) => SnapshotState::Failed(message.to_owned()),
        None => SnapshotState::Pending,
    }
}

/// Adds a problem for each of `names` (listed at `path`) that does not
/// exist in `ns`.
async fn missing<K>(
    client: &Client,
    ns: &str,
    names: &[String],
    path: &str,
    problems: &mut Vec<String>,
) -> Result<(), ObserveError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    for name in names {
        let found = api
            .get_metadata_opt(name)
            .await
            .map_err(|source| ObserveError {
                kind: "backup source",
                namespace: ns.to_owned(),
                name: format!("{kind} {name}"),
                source,
            })?;
        if found.is_none() {
            problems.push(format!("{kind} {ns}/{name} ({path}) does not exist"));
        }
    }
    Ok(())
}

/// Everything that stops the backup before it starts.
async fn backup_sources(
    client: &Client,
    ns: &str,
    backup: &BackupSpec,
) -> Result<BackupSources, ObserveError> {
    let err = |kind: &'static str, object: &str| {
        let (ns, object) = (ns.to_owned(), object.to_owned());
        move |source| ObserveError {
            kind,
            namespace: ns,
            name: object,
            source,
        }
    };
    let mut problems = Vec::new();
    missing::<ConfigMap>(
        client,
        ns,
        &backup.config_maps,
        "spec.backup.configMaps",
        &mut problems,
    )
    .await?;
    missing::<Secret>(
        client,
        ns,
        &backup.secrets,
        "spec.backup.secrets",
        &mut problems,
    )
    .await?;
    if backup.volumes.is_empty() {
        return Ok(BackupSources { problems });
    }
    let claims: Vec<String> = backup
        .volumes
        .iter()
        .map(|v| v.persistent_volume_claim.clone())
        .collect();
    missing::<PersistentVolumeClaim>(client, ns, &claims, "spec.backup.volumes", &mut problems)
        .await?;
    let resource = render::volume_snapshot_resource();
    match client.list_api_group_resources(&resource.api_version).await {
        Ok(list) if list.resources.iter().any(|r| r.name == resource.plural) => {}
        Ok(_) | Err(kube::Error::Api(_)) => {
            problems.push(format!(
                "the VolumeSnapshot API ({}) is not installed in this cluster: install the CSI snapshot CRDs and snapshot controller, or remove spec.backup.volumes",
                resource.api_version
            ));
            return Ok(BackupSources { problems });
        }
        Err(source) => return Err(err("API group", &resource.api_version)(source)),
    }
    let classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &render::volume_snapshot_class_resource());
    let named: Vec<&String> = backup
        .volumes
        .iter()
        .filter_map(|v| v.volume_snapshot_class_name.as_ref())
        .collect();
    for class in &named {
        if classes
            .get_opt(class)
            .await
            .map_err(err("VolumeSnapshotClass", class))?
            .is_none()
        {
            problems.push(format!(
                "VolumeSnapshotClass {class} (spec.backup.volumes) does not exist"
            ));
        }
    }
    if backup
        .volumes
        .iter()
        .any(|v| v.volume_snapshot_class_name.is_none())
    {
        let list = classes
            .list(&ListParams::default())
            .await
            .map_err(err("VolumeSnapshotClasses", ""))?;
        let default = list.items.iter().any(|c| {
            c.annotations()
                .get("snapshot.storage.kubernetes.io/is-default-class")
                .is_some_and(|v| v == "true")
        });
        if !default {
            problems.push(
                "no VolumeSnapshotClass is marked as the cluster default (annotation snapshot.storage.kubernetes.io/is-default-class: \"true\"): name one in spec.backup.volumes[].volumeSnapshotClassName".into(),
            );
        }
    }
    Ok(BackupSources { problems })
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
    let text = |key: &str| {
        release
            .annotations()
            .get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Requests {
        promote: get(request::PROMOTE),
        abort: get(request::ABORT),
        retry: get(request::RETRY),
        approval: get(request::APPROVE).zip(text(request::APPROVER)),
        freeze_override: get(request::OVERRIDE_FREEZE).zip(text(request::OVERRIDE_BY)),
        author: text(request::AUTHOR),
    }
}
