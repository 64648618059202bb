//! Performs the one side effect the planner asked for. Every effect is
//! idempotent: server-side apply with one field manager, or create-if-absent
//! with a deterministic name.

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, Deployment},
    batch::v1::Job,
    core::v1::ConfigMap,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{
    Effect, JobKind, planner,
    render::{self, Shipped},
};
use crate::{
    api::{Color, Release},
    controller::validate::Validated,
    labels::FIELD_MANAGER,
};

/// A side effect failed; one variant per operation.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Recording a revision failed.
    #[error("recording revision {revision} of Release {namespace}/{release}: {source}")]
    RecordRevision {
        /// Namespace.
        namespace: String,
        /// Release.
        release: String,
        /// Revision.
        revision: i64,
        /// Cause.
        source: kube::Error,
    },
    /// Reading a recorded revision failed.
    #[error(
        "reading the record of revision {revision} of Release {namespace}/{release}: {message}"
    )]
    ReadRecord {
        /// Namespace.
        namespace: String,
        /// Release.
        release: String,
        /// Revision.
        revision: i64,
        /// Why.
        message: String,
    },
    /// Applying or scaling a Deployment failed.
    #[error("{action} Deployment {namespace}/{name}: {source}")]
    Deployment {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Deployment name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// Steering a Service failed.
    #[error("pointing Service {namespace}/{name} at {color}: {source}")]
    Service {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// Target color.
        color: &'static str,
        /// Cause.
        source: kube::Error,
    },
    /// Creating, reading, replacing or deleting another child failed.
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Object {
        /// What was being done.
        action: &'static str,
        /// The object's kind.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name or selector.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// An effect cannot be performed as asked.
    #[error("{action} for Release {namespace}/{release}: {message}")]
    Refused {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Release.
        release: String,
        /// Why.
        message: String,
    },
}

impl ExecError {
    /// A stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ExecError::RecordRevision { .. } => "record_revision",
            ExecError::ReadRecord { .. } => "read_record",
            ExecError::Deployment { .. } => "deployment",
            ExecError::Service { .. } => "service",
            ExecError::Object { kind, .. } => match *kind {
                "ConfigMap" => "configmap",
                "Secret" => "secret",
                "Job" => "job",
                "VolumeSnapshot" => "volumesnapshot",
                "PersistentVolumeClaim" => "persistentvolumeclaim",
                _ => "object",
            },
            ExecError::Refused { .. } => "refused",
        }
    }
}

/// Builds [`ExecError::Object`] for one object.
pub(crate) fn object_err(
    action: &'static str,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> ExecError {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    move |source| ExecError::Object {
        action,
        kind,
        namespace,
        name,
        source,
    }
}

/// Creates `object` unless it exists; an existing one is left as it is.
pub(crate) async fn create_once<K>(api: &Api<K>, object: &K) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// What an effect left behind that status should remember.
#[derive(Debug, Default)]
pub struct Applied {
    /// A Deployment's generation right after the operator applied it.
    pub generation: Option<(Color, i64)>,
}

/// Performs `effect` for `release`.
pub async fn execute(
    client: &Client,
    release: &Release,
    validated: &Validated,
    effect: &Effect,
) -> Result<Applied, ExecError> {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    match effect {
        Effect::RecordRevision { revision } => {
            record_revision(client, release, *revision).await?;
            Ok(Applied::default())
        }
        Effect::ApplyDeployment { color, revision } => {
            let shipped = Shipped::of(&release.spec);
            let deployment = render::deployment(
                release,
                &shipped,
                &validated.template,
                *color,
                *revision,
                &restored_claims(release),
            );
            apply_deployment(client, &namespace, &deployment, &apply, *color).await
        }
        Effect::RestoreDeployment { color, revision } => {
            let shipped = read_record(client, release, *revision).await?;
            let template = shipped
                .workload
                .template
                .decode()
                .map_err(|m| record_err(release, *revision, m))?;
            let deployment = render::deployment(
                release,
                &shipped,
                &template,
                *color,
                *revision,
                &restored_claims(release),
            );
            apply_deployment(client, &namespace, &deployment, &apply, *color).await
        }
        Effect::TakeBackups { revision } => {
            super::backup::take(client, release, *revision).await?;
            Ok(Applied::default())
        }
        Effect::WriteConfig { revision } => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let owned = release.spec.config.iter();
            for cm in owned.flat_map(|c| render::config_maps(release, c, *revision)) {
                let cm_name = cm.name_any();
                create_once(&api, &cm).await.map_err(object_err(
                    "creating",
                    "ConfigMap",
                    &namespace,
                    &cm_name,
                ))?;
            }
            Ok(Applied::default())
        }
        Effect::RunJob { kind, revision } => {
            let job = runbook_job(client, release, validated, kind, *revision).await?;
            let api: Api<Job> = Api::namespaced(client.clone(), &namespace);
            create_once(&api, &job).await.map_err(object_err(
                "creating",
                "Job",
                &namespace,
                &job.name_any(),
            ))?;
            Ok(Applied::default())
        }
        Effect::RestoreConfig { revision } => {
            super::backup::restore_config(client, release, *revision).await?;
            Ok(Applied::default())
        }
        Effect::RestoreVolumes {
            revision,
            color,
            stable,
        } => {
            let claims = super::backup::restore_volumes(client, release, *revision).await?;
            let shipped = read_record(client, release, *stable).await?;
            let template = shipped
                .workload
                .template
                .decode()
                .map_err(|m| record_err(release, *stable, m))?;
            let mut all = restored_claims(release);
            all.extend(claims);
            let deployment =
                render::deployment(release, &shipped, &template, *color, *stable, &all);
            apply_deployment(client, &namespace, &deployment, &apply, *color).await
        }
        Effect::Prune { keep } => {
            super::backup::prune(client, release, keep).await?;
            Ok(Applied::default())
        }
        Effect::Scale { color, replicas } => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            let dname = render::deployment_name(&name, *color);
            // A merge patch, not an apply: an apply of only `replicas` by the
            // same field manager would drop the rest of what it applied.
            let patch = json!({"spec": {"replicas": replicas}});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            let written = api
                .patch(&dname, &params, &Patch::Merge(&patch))
                .await
                .map_err(|source| ExecError::Deployment {
                    action: "scaling",
                    namespace: namespace.clone(),
                    name: dname.clone(),
                    source,
                })?;
            Ok(Applied {
                generation: written.metadata.generation.map(|g| (*color, g)),
            })
        }
        Effect::PointService { service, color } => {
            let api: Api<k8s_openapi::api::core::v1::Service> =
                Api::namespaced(client.clone(), &namespace);
            let patch = render::service_selector_patch(service, &name, *color);
            api.patch(service, &apply, &Patch::Apply(&patch))
                .await
                .map_err(|source| ExecError::Service {
                    namespace: namespace.clone(),
                    name: service.clone(),
                    color: color.as_str(),
                    source,
                })?;
            Ok(Applied::default())
        }
    }
}

/// Claims the release mounts in place of the ones its template names.
fn restored_claims(release: &Release) -> std::collections::BTreeMap<String, String> {
    release
        .status
        .as_ref()
        .map(|s| s.restored_claims.clone())
        .unwrap_or_default()
}

fn record_err(release: &Release, revision: i64, message: String) -> ExecError {
    ExecError::ReadRecord {
        namespace: release.namespace().unwrap_or_default(),
        release: release.name_any(),
        revision,
        message,
    }
}

/// What `revision` shipped, from its record.
pub(crate) async fn read_record(
    client: &Client,
    release: &Release,
    revision: i64,
) -> Result<Shipped, ExecError> {
    let namespace = release.namespace().unwrap_or_default();
    let records: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let rname = render::record_name(&release.name_any(), revision);
    let record = records
        .get(&rname)
        .await
        .map_err(|e| record_err(release, revision, e.to_string()))?;
    render::shipped_from_record(&record).map_err(|m| record_err(release, revision, m))
}

/// The Job `kind` of `revision`. Forward Jobs come from the current spec
/// (a newer spec supersedes a run before its next forward step); undo Jobs
/// from the revision's record, with that revision's image.
async fn runbook_job(
    client: &Client,
    release: &Release,
    validated: &Validated,
    kind: &JobKind,
    revision: i64,
) -> Result<Job, ExecError> {
    let refused = |message: String| ExecError::Refused {
        action: "rendering a Job",
        namespace: release.namespace().unwrap_or_default(),
        release: release.name_any(),
        message,
    };
    let backup_timeout = |backup: Option<&crate::api::release::BackupSpec>| {
        backup
            .and_then(|b| b.timeout)
            .map_or(planner::DEFAULT_BACKUP_TIMEOUT, Into::into)
    };
    let migration_timeout = |m: &crate::api::release::MigrationSpec| {
        m.timeout
            .map_or(planner::DEFAULT_MIGRATION_TIMEOUT, Into::into)
    };
    let spec = &release.spec;
    let (job, image, timeout) = match kind {
        JobKind::Backup(name) => {
            let (job, _) = validated
                .backup_jobs
                .get(name)
                .ok_or_else(|| refused(format!("no backup named {name:?}")))?;
            (
                job.clone(),
                validated.image.clone(),
                backup_timeout(spec.backup.as_ref()),
            )
        }
        JobKind::ConfigCheck => {
            let check = spec
                .config
                .as_ref()
                .and_then(|c| c.check.as_ref())
                .ok_or_else(|| refused("no config check declared".into()))?;
            let template =
                render::revision_template(&validated.template, spec.config.as_ref(), revision);
            (
                render::config_check_job(&template, &validated.app_container, check),
                validated.image.clone(),
                check
                    .timeout
                    .map_or(planner::DEFAULT_CONFIG_CHECK_TIMEOUT, Into::into),
            )
        }
        JobKind::Migration | JobKind::MigrationVerify => {
            let (decoded, declared) = validated
                .migration
                .as_ref()
                .zip(spec.migration.as_ref())
                .ok_or_else(|| refused("no migration declared".into()))?;
            let job = if *kind == JobKind::Migration {
                Some(decoded.job.clone())
            } else {
                decoded.verify.clone()
            };
            let job = job.ok_or_else(|| refused("no migration verify Job declared".into()))?;
            (job, validated.image.clone(), migration_timeout(declared))
        }
        JobKind::MigrationRollback => {
            let (shipped, image) = recorded(client, release, revision).await?;
            let m = shipped
                .migration
                .as_ref()
                .ok_or_else(|| refused(format!("revision {revision} declared no migration")))?;
            let rollback = m.rollback.as_ref().ok_or_else(|| {
                refused(format!(
                    "revision {revision} declared no migration rollback"
                ))
            })?;
            let job = rollback
                .decode()
                .map_err(|e| record_err(release, revision, e))?;
            (job, image, migration_timeout(m))
        }
        JobKind::Restore(name) => {
            let (shipped, image) = recorded(client, release, revision).await?;
            let restore = shipped
                .backup
                .as_ref()
                .and_then(|b| b.jobs.iter().find(|j| &j.name == name))
                .and_then(|j| j.restore.as_ref())
                .ok_or_else(|| {
                    refused(format!("revision {revision} has no restore for {name:?}"))
                })?;
            let job = restore
                .decode()
                .map_err(|e| record_err(release, revision, e))?;
            (job, image, backup_timeout(shipped.backup.as_ref()))
        }
    };
    Ok(render::runbook_job(
        release, kind, &job, &image, revision, timeout,
    ))
}

/// What `revision` shipped and its application image, from its record.
async fn recorded(
    client: &Client,
    release: &Release,
    revision: i64,
) -> Result<(Shipped, String), ExecError> {
    let shipped = read_record(client, release, revision).await?;
    let template = shipped
        .workload
        .template
        .decode()
        .map_err(|m| record_err(release, revision, m))?;
    let image = render::app_image(&template, shipped.workload.container.as_deref())
        .ok_or_else(|| record_err(release, revision, "its pod template names no image".into()))?;
    Ok((shipped, image))
}

async fn apply_deployment(
    client: &Client,
    namespace: &str,
    deployment: &Deployment,
    params: &PatchParams,
    color: Color,
) -> Result<Applied, ExecError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let dname = deployment.name_any();
    let written = api
        .patch(&dname, params, &Patch::Apply(deployment))
        .await
        .map_err(|source| ExecError::Deployment {
            action: "applying",
            namespace: namespace.to_owned(),
            name: dname.clone(),
            source,
        })?;
    Ok(Applied {
        generation: written.metadata.generation.map(|g| (color, g)),
    })
}

/// Creates the revision record; a record left by an attempt that crashed
/// before its status was written is replaced when it describes other content.
async fn record_revision(
    client: &Client,
    release: &Release,
    revision: i64,
) -> Result<(), ExecError> {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let err = |source| ExecError::RecordRevision {
        namespace: namespace.clone(),
        release: name.clone(),
        revision,
        source,
    };
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let record = render::revision_record(release, &Shipped::of(&release.spec), revision);
    let rname = record.name_any();
    match api.create(&PostParams::default(), &record).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(&rname).await.map_err(err)?;
            if existing.data == record.data {
                return Ok(());
            }
            // ControllerRevision data is immutable: replace by delete + create.
            api.delete(&rname, &Default::default()).await.map_err(err)?;
            api.create(&PostParams::default(), &record)
                .await
                .map_err(err)?;
            Ok(())
        }
        Err(source) => Err(err(source)),
    }
}
