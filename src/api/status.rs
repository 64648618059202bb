//! What the operator reports on a Release.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{checks::CheckPhase, release::Changes};

/// The observed state of a Release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision being run or last run; each change to version,
    /// workload, config, migration or backup increments it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// A stable hash of what the revision ships (version, workload,
    /// config), used to notice a new revision and to compare versions
    /// across environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_hash: Option<String>,
    /// A stable hash of the version and pod template alone: equal in every
    /// environment that runs the same build, whatever its config; promotion
    /// compares it across environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// Who approved the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Who started the current revision inside a freeze window, and which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_overridden_by: Option<String>,
    /// The version the current revision ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the revision is in the runbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The color the active Service points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_color: Option<Color>,
    /// The last revision that reached Ready: what a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<i64>,
    /// The color the current revision deploys into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_color: Option<Color>,
    /// When the current revision's runbook started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<Time>,
    /// Why the current revision failed, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The `metadata.generation` of each color's Deployment right after the
    /// operator last applied it; a different generation means someone else
    /// changed it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied_generations: BTreeMap<String, i64>,
    /// The Environment whose rules apply, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Ready, Reconciling and Stalled (kstatus), plus Approved, BackedUp,
    /// Migrated, Verified and others as the runbook proceeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// This revision's runbook, one entry per step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// Results of this revision's preflight: one entry per dependency, plus
    /// `capacity` when it is checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<DependencyStatus>,
    /// Results of this revision's checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// Claims restored from a VolumeSnapshot by a rollback, by the claim
    /// the pod template names: every Deployment the release renders from
    /// then on mounts the restored claim in its place, until the template
    /// names another claim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restored_claims: BTreeMap<String, String>,
    /// Backups kept, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupRecord>,
    /// The deployment record (runbook 4.1), newest first, at most
    /// `historyLimit` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Runbook phases. BlueGreen: Pending, AwaitingApproval, Preflight,
/// BackingUp, Migrating, Deploying, Verifying, CuttingOver, Observing, Ready.
/// Recreate: Pending, AwaitingApproval, Preflight, BackingUp, Migrating
/// (config), Stopping, Migrating, Deploying, Verifying, Ready. Waiting
/// (promotion) comes before AwaitingApproval when the Environment has both.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Not started yet.
    Pending,
    /// Waiting for an environment gate: promotion from an earlier
    /// environment, its soak time, or a freeze window.
    Waiting,
    /// Waiting for a person's approval.
    AwaitingApproval,
    /// Checking dependencies and capacity.
    Preflight,
    /// Taking backups.
    BackingUp,
    /// Stopping the old version (Recreate).
    Stopping,
    /// Writing config and running the migration.
    Migrating,
    /// Rolling out the new color.
    Deploying,
    /// Running checks against the new color.
    Verifying,
    /// Waiting for a promote request, or switching traffic.
    CuttingOver,
    /// Running post-cutover checks while the old color stays warm.
    Observing,
    /// Serving; the runbook is complete.
    Ready,
    /// Undoing the revision's changes.
    RollingBack,
    /// The revision's changes were undone.
    RolledBack,
    /// The revision failed before changing anything, or rollback is off.
    Failed,
}

impl Phase {
    /// A phase the revision will not leave without a spec change or a
    /// retry request.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Ready | Phase::RolledBack | Phase::Failed)
    }
}

/// The two Deployments a BlueGreen release alternates between.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// `<release>-blue`
    Blue,
    /// `<release>-green`
    Green,
}

impl Color {
    /// The other color.
    pub fn other(self) -> Self {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The label value and name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

/// One runbook step of the current revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step, e.g. Preflight, Backup, Migrate, Deploy, Verify, CutOver.
    pub name: String,
    /// Where the step is.
    pub state: StepState,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What it did or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job it ran, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// The state of a runbook step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum StepState {
    /// Not started.
    Pending,
    /// In progress.
    Running,
    /// Done.
    Succeeded,
    /// Failed; the message says why.
    Failed,
    /// Not needed for this revision.
    Skipped,
}

/// Results of one check in one phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// The check's name.
    pub name: String,
    /// The phase these results belong to.
    pub phase: CheckPhase,
    /// Measurements that passed.
    pub passed: u32,
    /// Measurements that failed.
    pub failed: u32,
    /// Measurements that gave no answer.
    pub inconclusive: u32,
    /// The last measured value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,
    /// When the last measurement was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured_at: Option<Time>,
    /// The outcome, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CheckResult>,
    /// Detail of the last measurement or of the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The last result of one preflight dependency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyStatus {
    /// The dependency's name (`capacity` for the capacity check).
    pub name: String,
    /// Whether it was reachable (or fitted) when last checked.
    pub ready: bool,
    /// What was measured, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
}

/// A decided check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckResult {
    /// Passed.
    Passed,
    /// Failed.
    Failed,
}

/// The backups taken for one revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The revision the backups were taken before.
    pub revision: i64,
    /// Snapshot copies of ConfigMaps: original name to copy name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_maps: BTreeMap<String, String>,
    /// Snapshot copies of Secrets: original name to copy name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// VolumeSnapshots: claim name to snapshot name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_snapshots: BTreeMap<String, String>,
    /// Backup Jobs that ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
}

/// One finished revision in the deployment record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The revision.
    pub revision: i64,
    /// The version shipped.
    pub version: String,
    /// How it ended: Ready, RolledBack or Failed.
    pub result: Phase,
    /// Why it ended that way, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the runbook started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Who started it inside a freeze window, and which window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_overridden_by: Option<String>,
    /// What it changed.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub changes: Changes,
    /// What a rollback undid, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undone: Vec<String>,
    /// What a rollback left as it was, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_as_is: Vec<String>,
    /// When each step that ran started and ended, and how; the message is
    /// kept for a failed step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
}
