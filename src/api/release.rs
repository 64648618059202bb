//! The `Release`: what an application team ships and how to prove it works.

use std::collections::BTreeMap;

use k8s_openapi::api::{batch::v1::JobSpec, core::v1::PodTemplateSpec};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Duration,
    checks::{Check, Preflight},
    notify::Notification,
    schema::Embedded,
    status::ReleaseStatus,
};

/// A Release runs the whole deployment runbook for one application in one
/// namespace: preflight checks, backups, config, database migration, a
/// blue/green or Recreate deploy, verification and cutover, then records and
/// notifies — or rolls back traffic, config, schema and (opt-in) data.
///
/// Every change to what is shipped (`version`, `workload`, `config`) starts a
/// new revision that runs the runbook once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lockkeeper.dev",
    version = "v1alpha1",
    kind = "Release",
    namespaced,
    status = "ReleaseStatus",
    shortname = "rel",
    category = "lockkeeper",
    doc = "A Release runs the whole deployment runbook for one application: preflight, backup, config, migration, deploy, verification, cutover, record and notify, or a rollback of traffic, config, schema and (opt-in) data.",
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeColor"),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("a Release name must be at most 40 characters: it prefixes the names of the Deployments, Jobs and ConfigMaps it creates")
)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The version being shipped, e.g. `v1.2.3`. Recorded in the history,
    /// set as the `app.kubernetes.io/version` label on everything the
    /// revision creates, and compared across environments for promotion.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::LABEL_VALUE_PATTERN))]
    pub version: String,

    /// What this revision changes (runbook 1.1). Kept in the deployment
    /// history and sent with notifications; it does not affect the rollout.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub changes: Changes,

    /// The application itself. The operator owns the `<release>-blue` and
    /// `<release>-green` Deployments rendered from it.
    pub workload: Workload,

    /// Configuration owned by the release (runbook 2.3), materialised per
    /// revision as immutable, revision-suffixed ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,

    /// How the new version replaces the old one.
    pub strategy: Strategy,

    /// Checks run before anything changes (runbook 1.2, 1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Preflight>,

    /// What is backed up before anything changes (runbook 1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// The database migration of this revision (runbook 2.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationSpec>,

    /// Checks that prove the new version works (runbook 3.1–3.3), run
    /// before cutover, after it, or both. Names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub verify: Vec<Check>,

    /// What a rollback undoes. Unset fields inherit the Environment's
    /// defaults, then the built-in ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,

    /// Where Prometheus checks send their queries; inherits the
    /// Environment's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusEndpoint>,

    /// Who is told about the release and when (runbook 4.2). Names must be
    /// unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub notify: Vec<Notification>,

    /// How many finished revisions `status.history` keeps (runbook 4.1).
    /// Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: Option<u32>,
}

/// What a revision changes, in the words of the people shipping it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// New or changed features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub features: Vec<String>,
    /// Fixed defects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub fixes: Vec<String>,
    /// Configuration changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub config: Vec<String>,
    /// Database schema or data changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub database: Vec<String>,
    /// Dependency changes (libraries, services, infrastructure).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub dependencies: Vec<String>,
}

impl Changes {
    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
            && self.fixes.is_empty()
            && self.config.is_empty()
            && self.database.is_empty()
            && self.dependencies.is_empty()
    }
}

/// The application's pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Desired number of pods of the active color. Defaults to 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// The pod template (a `core/v1` PodTemplateSpec) each color's
    /// Deployment is rendered from. The operator adds its labels and points
    /// references to release-owned ConfigMaps at this revision's copies.
    pub template: Embedded<PodTemplateSpec>,

    /// The application container: its image is the version's image, used
    /// by migration and check Jobs that name none. Defaults to the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub container: Option<String>,

    /// How long the new color may take to become fully available before
    /// the deploy counts as failed. Defaults to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Duration>,
}

fn default_replicas() -> i32 {
    1
}

/// Configuration owned by the release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// ConfigMaps materialised per revision as `<name>-r<revision>`
    /// (immutable). Pods of a revision see their own revision's copy, so the
    /// old color keeps its config and a rollback of config costs nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub config_maps: Vec<OwnedConfigMap>,

    /// Checks the new config with the new image before anything is
    /// deployed (runbook 2.3 `--check-config`), run as a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<ConfigCheck>,
}

/// A ConfigMap whose content the release owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnedConfigMap {
    /// The name the pod template refers to; each revision gets a copy
    /// named `<name>-r<revision>`.
    #[schemars(length(min = 1, max = 50), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub name: String,
    /// The ConfigMap's data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// A config check run with the new image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigCheck {
    /// The command, e.g. `["app", "--check-config"]`.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// How long the check may run. Defaults to 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// How the new version replaces the old.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'BlueGreen' || has(self.blueGreen)").message("strategy.type BlueGreen needs strategy.blueGreen with at least activeService"),
    validation = Rule::new("self.type != 'Recreate' || !has(self.blueGreen)").message("strategy.blueGreen is only valid with strategy.type BlueGreen"),
    validation = Rule::new("self.type != 'BlueGreen' || !has(self.recreate)").message("strategy.recreate is only valid with strategy.type Recreate")
)]
pub struct Strategy {
    /// `BlueGreen` runs the new version beside the old and switches a
    /// Service; `Recreate` stops the old version first (runbook 2.1: stop,
    /// deploy, start) for applications that cannot run two versions.
    #[serde(rename = "type")]
    pub type_: StrategyType,
    /// Settings for `BlueGreen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    /// Settings for `Recreate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate: Option<Recreate>,
}

/// The two ways a revision replaces the previous one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StrategyType {
    /// Run the new color beside the old one and switch traffic.
    BlueGreen,
    /// Stop the old version, then deploy and start the new one.
    Recreate,
}

/// Blue/green settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.previewService) || self.previewService != self.activeService").message("previewService must differ from activeService"))]
pub struct BlueGreen {
    /// The Service that carries production traffic. The operator switches
    /// its selector between the colors; it must exist in the Release's
    /// namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub active_service: String,
    /// A Service the operator points at the new color before cutover, for
    /// PreCutover checks and people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub preview_service: Option<String>,
    /// Cut over as soon as PreCutover checks pass. When false the revision
    /// waits for a promote request. Defaults to true.
    #[serde(default = "default_true")]
    pub auto_cutover: bool,
    /// How long the old color keeps running after cutover, for an instant
    /// switch back. Defaults to 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<Duration>,
}

/// Recreate settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recreate {
    /// An optional Service the operator points at the running revision's
    /// pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub service: Option<String>,
}

pub(crate) fn default_true() -> bool {
    true
}

/// Backups taken before anything changes (runbook 1.3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// ConfigMaps not owned by the release: copied before the change and
    /// restored on rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub config_maps: Vec<String>,
    /// Secrets: copied before the change and restored on rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub secrets: Vec<String>,
    /// PersistentVolumeClaims snapshotted with CSI VolumeSnapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub volumes: Vec<VolumeBackup>,
    /// Jobs that back up data (e.g. a database dump), each with an optional
    /// restore Job run on rollback. Names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub jobs: Vec<BackupJob>,
    /// Backups of this many most recent revisions are kept; older ones are
    /// deleted (runbook 4.3). Defaults to 3.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 100))]
    pub keep: u32,
    /// How long the whole backup step may take. Defaults to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

fn default_keep() -> u32 {
    3
}

/// A PersistentVolumeClaim to snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    /// The claim's name, in the Release's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: String,
    /// The VolumeSnapshotClass to use; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// A backup Job and its optional restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupJob {
    /// Name of the backup; its Job is `<release>-backup-<name>-r<revision>`.
    #[schemars(length(min = 1, max = 20), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub name: String,
    /// The backup Job (a `batch/v1` JobSpec). Containers without an image
    /// get the new version's image.
    pub template: Embedded<JobSpec>,
    /// A Job (a `batch/v1` JobSpec) that restores this backup, run on
    /// rollback when `rollback.restoreVolumes` allows data restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Embedded<JobSpec>>,
}

/// The database migration of a revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// The migration Job (a `batch/v1` JobSpec); containers without an
    /// image get the new version's image. Runs exactly once per revision,
    /// honouring its own `backoffLimit`.
    pub job: Embedded<JobSpec>,
    /// A Job that verifies the migrated schema, e.g. `manage.py check
    /// --database`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Embedded<JobSpec>>,
    /// The down-migration, run with the NEW image on rollback (it knows
    /// what it created). Without it a rollback leaves the schema as
    /// migrated, and the status says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Embedded<JobSpec>>,
    /// How long the migration may run. Defaults to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// What a rollback undoes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Roll back automatically when a step fails after the first change.
    /// When false the release stops in `Failed` and waits for a person.
    /// Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic: Option<bool>,
    /// Restore backed-up ConfigMaps and Secrets. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_config: Option<bool>,
    /// Run the migration's rollback Job when a migration ran. Defaults to
    /// true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_migration_rollback: Option<bool>,
    /// Restore volumes from their snapshots and run backup restore Jobs.
    /// This loses writes made since the snapshot, so it defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_volumes: Option<bool>,
}

/// A Prometheus server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusEndpoint {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(max = 2048), regex(pattern = super::schema::HTTP_URL_PATTERN))]
    pub address: String,
    /// A Secret key holding a bearer token sent with each query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<super::SecretKeyRef>,
}
