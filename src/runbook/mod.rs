//! The runbook: prepare → deploy → verify → cut over → complete, or roll
//! back. `planner` decides the next action from what is observed (pure);
//! `observe` gathers that picture; `execute` performs the one side effect
//! the planner asked for; `render` builds the objects it applies.

pub mod backup;
pub mod execute;
pub mod observe;
pub mod planner;
pub mod preflight;
pub mod render;
pub mod steps;
pub mod verify;

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use crate::api::{Color, ReleaseSpec, ReleaseStatus};

/// What one color's Deployment looks like now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentState {
    /// The revision label of its pod template.
    pub revision: Option<i64>,
    /// `spec.replicas`.
    pub desired: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Pods available.
    pub available: i32,
    /// True once the Deployment controller has seen the latest spec.
    pub observed_current: bool,
    /// The Deployment controller gave up waiting for progress; its message.
    pub deadline_exceeded: Option<String>,
    /// `metadata.generation`.
    pub generation: i64,
}

impl DeploymentState {
    /// Fully rolled out at `replicas`.
    pub fn is_available(&self, replicas: i32) -> bool {
        self.observed_current
            && self.desired == replicas
            && self.updated >= replicas
            && self.available >= replicas
    }
}

/// What a Service the operator steers looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// It does not exist.
    Missing,
    /// It exists but cannot be steered by selector (ExternalName, or no
    /// selector at all); the reason.
    Unsteerable(String),
    /// It selects this color of the release, or none of them yet.
    Selects(Option<Color>),
}

/// Requests people made through annotations, each naming a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Promote (cut over) this revision.
    pub promote: Option<i64>,
    /// Abort this revision and roll back.
    pub abort: Option<i64>,
    /// Run this failed revision again.
    pub retry: Option<i64>,
    /// An approval: the revision and who approved it.
    pub approval: Option<(i64, String)>,
    /// A freeze override: the revision and who overrode.
    pub freeze_override: Option<(i64, String)>,
    /// Who last changed the spec, as admission stamped it.
    pub author: Option<String>,
}

/// Where the same build stands in the environments a revision is promoted
/// from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// It is Ready in this Release (`namespace/name`) since then.
    Ready {
        /// Where.
        at: String,
        /// Since when.
        since: Timestamp,
    },
    /// Not (yet): why, for the person waiting.
    NotYet(String),
}

/// The Environment's gates a revision passes before it changes anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gates {
    /// Promotion: the environments, the soak time and (looked up while the
    /// gate is open) where the build stands there.
    pub promotion: Option<(Vec<String>, Duration, Option<Upstream>)>,
    /// Approval: whether the approver must differ from the author.
    pub approval: Option<bool>,
}

/// A Job the runbook runs for a revision. Its name is deterministic
/// (`<release>-<what>-r<revision>`), so it is created once per revision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    /// A backup Job (runbook 1.3), by backup name.
    Backup(String),
    /// The restore Job of a backup, run on rollback.
    Restore(String),
    /// The config check run with the new image (runbook 2.3).
    ConfigCheck,
    /// The database migration (runbook 2.4).
    Migration,
    /// The migration's verification.
    MigrationVerify,
    /// The down-migration, run with the new image on rollback.
    MigrationRollback,
}

impl JobKind {
    /// The `<what>` in the Job's name, also its `lockkeeper.dev/job` label.
    pub fn what(&self) -> String {
        match self {
            JobKind::Backup(name) => format!("backup-{name}"),
            JobKind::Restore(name) => format!("restore-{name}"),
            JobKind::ConfigCheck => "config-check".into(),
            JobKind::Migration => "migrate".into(),
            JobKind::MigrationVerify => "migrate-verify".into(),
            JobKind::MigrationRollback => "migrate-rollback".into(),
        }
    }

    /// What the Job is, for messages.
    pub fn describe(&self) -> String {
        match self {
            JobKind::Backup(name) => format!("backup Job {name:?}"),
            JobKind::Restore(name) => format!("restore Job of backup {name:?}"),
            JobKind::ConfigCheck => "config check Job".into(),
            JobKind::Migration => "migration Job".into(),
            JobKind::MigrationVerify => "migration verify Job".into(),
            JobKind::MigrationRollback => "migration rollback Job".into(),
        }
    }
}

/// Where a runbook Job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Created and not finished.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed for good (its backoffLimit or deadline spent): why, with the
    /// tail of its pod's log when the cluster serves logs.
    Failed(String),
}

/// Where a VolumeSnapshot is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotState {
    /// Not ready to use yet.
    Pending,
    /// Ready to restore from.
    Ready,
    /// The snapshotter reported an error.
    Failed(String),
}

/// What the backup step needs to know before it copies anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupSources {
    /// Each thing that stops the backup before it starts: a listed
    /// ConfigMap, Secret or claim that does not exist, the VolumeSnapshot
    /// API not served, a snapshot class missing. Empty when all is there.
    pub problems: Vec<String>,
}

/// The release's children and the Services it steers, as observed.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// The blue Deployment.
    pub blue: Option<DeploymentState>,
    /// The green Deployment.
    pub green: Option<DeploymentState>,
    /// The Service carrying production traffic (BlueGreen's active Service
    /// or Recreate's optional Service); `None` when there is none to steer.
    pub traffic_service: Option<ServiceState>,
    /// BlueGreen's preview Service, when configured.
    pub preview_service: Option<ServiceState>,
    /// Pods still present of the color being stopped (gathered only while
    /// stopping).
    pub pods: Option<(Color, u32)>,
    /// Whether the revision record of the stable revision exists (looked up
    /// only while rolling back).
    pub stable_record: bool,
    /// The current revision's runbook Jobs that exist.
    pub jobs: BTreeMap<JobKind, JobState>,
    /// The backup step's sources, looked up while that step has not
    /// finished; `None` when not looked up.
    pub backup_sources: Option<BackupSources>,
    /// The current revision's VolumeSnapshots, by claim.
    pub snapshots: BTreeMap<String, SnapshotState>,
    /// Whether the current revision's config ConfigMaps all exist.
    pub config_written: bool,
    /// What the current revision shipped, from its record (read only while
    /// it is undone: its undo runs what it declared, not a newer spec).
    pub record: Option<render::Shipped>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The time of this reconcile.
    pub now: Timestamp,
    /// The Release's name, which names its children.
    pub name: &'a str,
    /// `metadata.generation` of the Release.
    pub generation: i64,
    /// The spec.
    pub spec: &'a ReleaseSpec,
    /// The revision hash of the spec (version, workload, config).
    pub hash: String,
    /// The status as last written.
    pub status: &'a ReleaseStatus,
    /// The children and Services as they are now.
    pub world: World,
    /// Requests made by people.
    pub requests: Requests,
    /// A freeze window of the Environment in force now.
    pub frozen: Option<crate::freeze::Freeze>,
    /// The Environment's promotion and approval gates.
    pub gates: Gates,
    /// The hash of the version and pod template (see
    /// `ReleaseStatus::template_hash`).
    pub template_hash: String,
}

impl Observed<'_> {
    /// One color's Deployment.
    pub fn deployment(&self, color: Color) -> Option<&DeploymentState> {
        match color {
            Color::Blue => self.world.blue.as_ref(),
            Color::Green => self.world.green.as_ref(),
        }
    }
}

/// One side effect, idempotent by construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Record what revision `revision` ships (a ControllerRevision).
    RecordRevision {
        /// The revision.
        revision: i64,
    },
    /// Apply `color`'s Deployment rendered from the current spec.
    ApplyDeployment {
        /// The color.
        color: Color,
        /// The revision it runs.
        revision: i64,
    },
    /// Apply `color`'s Deployment rendered from a recorded revision.
    RestoreDeployment {
        /// The color.
        color: Color,
        /// The recorded revision it runs again.
        revision: i64,
    },
    /// Scale `color`'s Deployment.
    Scale {
        /// The color.
        color: Color,
        /// New replica count.
        replicas: i32,
    },
    /// Point a Service's selector at `color`.
    PointService {
        /// The Service.
        service: String,
        /// The color.
        color: Color,
    },
    /// Copy the listed ConfigMaps and Secrets (immutable snapshot copies)
    /// and snapshot the listed claims, before `revision` changes anything.
    TakeBackups {
        /// The revision.
        revision: i64,
    },
    /// Write `revision`'s immutable config ConfigMaps.
    WriteConfig {
        /// The revision.
        revision: i64,
    },
    /// Create a runbook Job if it does not exist; never replaced.
    RunJob {
        /// Which Job.
        kind: JobKind,
        /// The revision it belongs to.
        revision: i64,
    },
    /// Put the ConfigMaps and Secrets copied before `revision` back.
    RestoreConfig {
        /// The revision.
        revision: i64,
    },
    /// Create claims from the VolumeSnapshots taken before `revision` and
    /// point `color` (running `stable`) at them.
    RestoreVolumes {
        /// The revision whose snapshots are restored.
        revision: i64,
        /// The color to point at the restored claims.
        color: Color,
        /// The revision that color runs.
        stable: i64,
    },
    /// Delete backups and per-revision config of revisions not in `keep`.
    Prune {
        /// The revisions whose backups and config stay.
        keep: Vec<i64>,
    },
}

impl Effect {
    /// The API resource the effect writes, for metrics.
    pub fn resource(&self) -> &'static str {
        match self {
            Effect::RecordRevision { .. } => "controllerrevisions",
            Effect::ApplyDeployment { .. }
            | Effect::RestoreDeployment { .. }
            | Effect::Scale { .. } => "deployments",
            Effect::PointService { .. } => "services",
            Effect::TakeBackups { .. } => "backups",
            Effect::WriteConfig { .. } | Effect::RestoreConfig { .. } => "configmaps",
            Effect::RunJob { .. } => "jobs",
            Effect::RestoreVolumes { .. } => "persistentvolumeclaims",
            Effect::Prune { .. } => "prune",
        }
    }
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// The planner's answer: the status to write once `effect` (if any) has
/// been performed, and when to look again.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The status to record.
    pub status: ReleaseStatus,
    /// The side effect to perform first.
    pub effect: Option<Effect>,
    /// Look again after this long even without a change (time-based waits).
    pub requeue: Option<Duration>,
    /// Events to publish.
    pub notes: Vec<Note>,
}
