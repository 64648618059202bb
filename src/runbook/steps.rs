//! The runbook's steps: which a revision runs, in which order, which phase
//! each belongs to, and which of them change the world.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    Phase, ReleaseSpec, ReleaseStatus,
    release::StrategyType,
    status::{StepState, StepStatus},
};

/// A runbook step (forward) or an undo step (rollback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The Environment's promotion gate: the same build Ready upstream for
    /// the soak time.
    Promote,
    /// The Environment's approval gate.
    Approve,
    /// Runbook 1.2, 1.4: dependencies and capacity.
    Preflight,
    /// Runbook 1.3: backups.
    Backup,
    /// Runbook 2.1 (Recreate): stop the old version.
    Stop,
    /// Runbook 2.3: per-revision config.
    Config,
    /// Runbook 2.4: database migration.
    Migrate,
    /// Runbook 2.2, 2.5: deploy and start the new color.
    Deploy,
    /// Runbook 3.1–3.3 before traffic moves.
    Verify,
    /// Switch the active Service.
    CutOver,
    /// Post-cutover checks and the old color's scale-down delay.
    Observe,
    /// Runbook 4: record, notify, retain.
    Complete,
    /// Undo: traffic back to the previous color.
    RollBackTraffic,
    /// Undo: the new color scaled to zero.
    ScaleDownNew,
    /// Undo: the migration's rollback Job, run with the new image.
    RollBackMigration,
    /// Undo: backed-up ConfigMaps and Secrets put back.
    RestoreConfig,
    /// Undo (opt-in): claims restored from their VolumeSnapshots and
    /// backup restore Jobs run.
    RestoreData,
}

impl Step {
    /// The name shown in `status.steps`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Promote => "Promote",
            Step::Approve => "Approve",
            Step::Preflight => "Preflight",
            Step::Backup => "Backup",
            Step::Stop => "Stop",
            Step::Config => "Config",
            Step::Migrate => "Migrate",
            Step::Deploy => "Deploy",
            Step::Verify => "Verify",
            Step::CutOver => "CutOver",
            Step::Observe => "Observe",
            Step::Complete => "Complete",
            Step::RollBackTraffic => "RollBackTraffic",
            Step::ScaleDownNew => "ScaleDownNew",
            Step::RollBackMigration => "RollBackMigration",
            Step::RestoreConfig => "RestoreConfig",
            Step::RestoreData => "RestoreData",
        }
    }

    /// The step named `name`.
    pub fn from_name(name: &str) -> Option<Step> {
        ALL.iter().copied().find(|s| s.name() == name)
    }

    /// The phase a revision is in while this step runs.
    pub fn phase(self) -> Phase {
        match self {
            Step::Promote => Phase::Waiting,
            Step::Approve => Phase::AwaitingApproval,
            Step::Preflight => Phase::Preflight,
            Step::Backup => Phase::BackingUp,
            Step::Stop => Phase::Stopping,
            Step::Config | Step::Migrate => Phase::Migrating,
            Step::Deploy => Phase::Deploying,
            Step::Verify => Phase::Verifying,
            Step::CutOver => Phase::CuttingOver,
            Step::Observe => Phase::Observing,
            Step::Complete => Phase::Ready,
            Step::RollBackTraffic
            | Step::ScaleDownNew
            | Step::RollBackMigration
            | Step::RestoreConfig
            | Step::RestoreData => Phase::RollingBack,
        }
    }

    /// Whether this step changes what is running, so that a failure from
    /// here on must be undone rather than merely reported.
    pub fn changes_the_world(self) -> bool {
        !matches!(
            self,
            Step::Promote | Step::Approve | Step::Preflight | Step::Backup | Step::Config
        )
    }

    /// An undo step.
    pub fn is_undo(self) -> bool {
        matches!(
            self,
            Step::RollBackTraffic
                | Step::ScaleDownNew
                | Step::RollBackMigration
                | Step::RestoreConfig
                | Step::RestoreData
        )
    }
}

const ALL: [Step; 17] = [
    Step::Promote,
    Step::Approve,
    Step::Preflight,
    Step::Backup,
    Step::Stop,
    Step::Config,
    Step::Migrate,
    Step::Deploy,
    Step::Verify,
    Step::CutOver,
    Step::Observe,
    Step::Complete,
    Step::RollBackTraffic,
    Step::ScaleDownNew,
    Step::RollBackMigration,
    Step::RestoreConfig,
    Step::RestoreData,
];

/// The forward steps of a revision of `spec`, in order.
pub fn forward(spec: &ReleaseSpec) -> Vec<Step> {
    match spec.strategy.type_ {
        StrategyType::BlueGreen => vec![
            Step::Preflight,
            Step::Backup,
            Step::Config,
            Step::Migrate,
            Step::Deploy,
            Step::Verify,
            Step::CutOver,
            Step::Observe,
            Step::Complete,
        ],
        // The config is written and checked while the old version still
        // serves: a bad config fails the revision with nothing stopped.
        StrategyType::Recreate => vec![
            Step::Preflight,
            Step::Backup,
            Step::Config,
            Step::Stop,
            Step::Migrate,
            Step::Deploy,
            Step::Verify,
            Step::Complete,
        ],
    }
}

/// The forward steps of a revision: the Environment's gates (promotion,
/// then approval), then the runbook.
pub fn gated(spec: &ReleaseSpec, promotion: bool, approval: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if promotion {
        steps.push(Step::Promote);
    }
    if approval {
        steps.push(Step::Approve);
    }
    steps.extend(forward(spec));
    steps
}

/// The undo steps, in order, for a revision that got as far as it did:
/// traffic first (the fastest way back for users), then the new color
/// stopped, then the schema, config and (opt-in) data.
pub fn undo(st: &ReleaseStatus, migration_seen: bool) -> Vec<Step> {
    let mut undo = vec![Step::RollBackTraffic, Step::ScaleDownNew];
    let migrated = migration_seen
        || st.steps.iter().any(|s| {
            s.name == Step::Migrate.name()
                && matches!(
                    s.state,
                    StepState::Running | StepState::Succeeded | StepState::Failed
                )
        });
    if migrated {
        undo.push(Step::RollBackMigration);
    }
    let backups = st
        .revision
        .and_then(|r| st.backups.iter().find(|b| b.revision == r));
    if let Some(b) = backups {
        if !b.config_maps.is_empty() || !b.secrets.is_empty() {
            undo.push(Step::RestoreConfig);
        }
        if !b.volume_snapshots.is_empty() || !b.jobs.is_empty() {
            undo.push(Step::RestoreData);
        }
    }
    undo
}

/// Fresh, all-pending status entries for `steps`.
pub fn pending(steps: &[Step]) -> Vec<StepStatus> {
    steps
        .iter()
        .map(|s| StepStatus {
            name: s.name().to_owned(),
            state: StepState::Pending,
            started_at: None,
            finished_at: None,
            message: None,
            job: None,
        })
        .collect()
}

/// The first step that is neither done nor skipped.
pub fn current(steps: &[StepStatus]) -> Option<(usize, Step)> {
    steps.iter().enumerate().find_map(|(i, s)| {
        let open = matches!(s.state, StepState::Pending | StepState::Running);
        open.then(|| Step::from_name(&s.name).map(|step| (i, step)))
            .flatten()
    })
}

/// True when a forward step that changes the world has started.
pub fn anything_changed(steps: &[StepStatus]) -> bool {
    steps.iter().any(|s| {
        s.state != StepState::Pending
            && s.state != StepState::Skipped
            && Step::from_name(&s.name)
                .is_some_and(|step| step.changes_the_world() && !step.is_undo())
    })
}

/// Marks step `i` running (once), with `message`.
pub fn mark_running(steps: &mut [StepStatus], i: usize, message: String, now: Timestamp) {
    if let Some(s) = steps.get_mut(i) {
        if s.started_at.is_none() {
            s.started_at = Some(Time(now));
        }
        s.state = StepState::Running;
        s.message = Some(message);
    }
}

/// Marks step `i` finished in `state`, with `message`.
pub fn mark_finished(
    steps: &mut [StepStatus],
    i: usize,
    state: StepState,
    message: String,
    now: Timestamp,
) {
    if let Some(s) = steps.get_mut(i) {
        if s.started_at.is_none() {
            s.started_at = Some(Time(now));
        }
        s.finished_at = Some(Time(now));
        s.state = state;
        s.message = Some(message);
    }
}

/// When step `step` finished, if it has.
pub fn finished_at(steps: &[StepStatus], step: Step) -> Option<Timestamp> {
    steps
        .iter()
        .find(|s| s.name == step.name())
        .and_then(|s| s.finished_at.as_ref())
        .map(|t| t.0)
}

/// When step `step` started, if it has.
pub fn started_at(steps: &[StepStatus], step: Step) -> Option<Timestamp> {
    steps
        .iter()
        .find(|s| s.name == step.name())
        .and_then(|s| s.started_at.as_ref())
        .map(|t| t.0)
}

/// Whether step `step` succeeded.
pub fn succeeded(steps: &[StepStatus], step: Step) -> bool {
    steps
        .iter()
        .any(|s| s.name == step.name() && s.state == StepState::Succeeded)
}
