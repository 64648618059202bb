//! Performs the one side effect the planner asked for. Every effect is
//! idempotent: server-side apply with one field manager, or create-if-absent
//! with a deterministic name.

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{
    Effect,
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
}

impl ExecError {
    /// A stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ExecError::RecordRevision { .. } => "record_revision",
            ExecError::ReadRecord { .. } => "read_record",
            ExecError::Deployment { .. } => "deployment",
            ExecError::Service { .. } => "service",
        }
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
            let deployment =
                render::deployment(release, &shipped, &validated.template, *color, *revision);
            apply_deployment(client, &namespace, &deployment, &apply, *color).await
        }
        Effect::RestoreDeployment { color, revision } => {
            let records: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
            let rname = render::record_name(&name, *revision);
            let read_err = |message: String| ExecError::ReadRecord {
                namespace: namespace.clone(),
                release: name.clone(),
                revision: *revision,
                message,
            };
            let record = records
                .get(&rname)
                .await
                .map_err(|e| read_err(e.to_string()))?;
            let shipped = render::shipped_from_record(&record).map_err(read_err)?;
            let template = shipped.workload.template.decode().map_err(read_err)?;
            let deployment = render::deployment(release, &shipped, &template, *color, *revision);
            apply_deployment(client, &namespace, &deployment, &apply, *color).await
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
