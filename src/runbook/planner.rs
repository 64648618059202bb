//! The planner: observed state in, the next action out. No I/O.
//!
//! Each call finishes every step that is already done, then stops at the
//! first step that needs a side effect or has to wait, and returns that one
//! effect together with the status to record once it has been performed.
//! Progress is read from the world (Deployments, Services) wherever the world
//! can show it, so that a crash between the effect and the status write only
//! repeats an idempotent effect.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use std::collections::BTreeMap;

use super::{
    Effect, JobKind, JobState, Note, Observed, Plan, ServiceState, SnapshotState, Upstream,
    preflight, render,
    steps::{self, Step},
    verify::{self, Standing},
};
use crate::{
    api::{
        Color, Phase, ReleaseStatus,
        checks::CheckPhase,
        release::StrategyType,
        release::{BackupSpec, MigrationSpec},
        status::{HistoryEntry, StepState, StepStatus},
    },
    controller::conditions::{self, Desired},
};

/// How long the old color stays up after cutover when nothing is set.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);
/// How many history entries are kept when nothing is set.
pub const DEFAULT_HISTORY_LIMIT: usize = 10;
/// How often pods are counted while the old version stops.
const POD_POLL: Duration = Duration::from_secs(1);
/// How often the promotion gate looks upstream again.
const UPSTREAM_POLL: Duration = Duration::from_secs(2);
/// How often a running runbook Job or VolumeSnapshot is looked at.
const JOB_POLL: Duration = Duration::from_secs(1);
/// How long past its timeout a Job may still be seen running before the
/// step gives up on it (its activeDeadlineSeconds should end it first).
const JOB_GRACE: Duration = Duration::from_secs(30);
/// How long the backup step may take when nothing is set.
pub const DEFAULT_BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a migration may take when nothing is set.
pub const DEFAULT_MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the config check may take when nothing is set.
pub const DEFAULT_CONFIG_CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Decides the next action.
pub fn plan(obs: &Observed<'_>) -> Plan {
    let mut planner = Planner {
        obs,
        st: obs.status.clone(),
        effect: None,
        requeue: None,
        notes: Vec::new(),
        blocked: None,
        waiting: None,
    };
    let before = planner.st.phase;
    planner.run();
    planner.finish(before)
}

enum Outcome {
    Done(String),
    Skip(String),
    Act(Effect, String),
    Wait(String, Option<Duration>),
    Fail(String),
}

struct Planner<'a> {
    obs: &'a Observed<'a>,
    st: ReleaseStatus,
    effect: Option<Effect>,
    requeue: Option<Duration>,
    notes: Vec<Note>,
    /// A reason the revision cannot start, reported as Stalled.
    blocked: Option<(&'static str, String)>,
    /// A reason the revision has not started yet that passes with time,
    /// reported as Reconciling.
    waiting: Option<(&'static str, String)>,
}

impl Planner<'_> {
    fn run(&mut self) {
        self.st.observed_generation = Some(self.obs.generation);
        let new_spec = self.st.revision_hash.as_deref() != Some(self.obs.hash.as_str());
        let phase = self.st.phase;
        let revision = self.st.revision;

        if new_spec || revision.is_none() {
            match phase {
                None => return self.start_revision(),
                Some(p) if p.is_terminal() => return self.start_revision(),
                Some(Phase::RollingBack) => {}
                Some(_) if !self.anything_changed() => {
                    self.end_run(
                        Phase::Failed,
                        "superseded by a newer spec before anything changed".into(),
                    );
                    return self.start_revision();
                }
                Some(_) => {
                    return self.fail_run(
                        "superseded by a newer spec; undoing this revision first".into(),
                    );
                }
            }
        }

        match self.st.phase {
            Some(Phase::RolledBack | Phase::Failed) => {
                if self.obs.requests.retry.is_some() && self.obs.requests.retry == revision {
                    self.note(
                        false,
                        "RetryRequested",
                        format!("retrying revision {}", revision.unwrap_or_default()),
                    );
                    self.start_revision();
                }
                return;
            }
            Some(Phase::Ready) => return self.keep_ready(),
            _ => {}
        }

        let aborting = self.obs.requests.abort.is_some() && self.obs.requests.abort == revision;
        if aborting && self.st.phase != Some(Phase::RollingBack) {
            self.note(
                true,
                "AbortRequested",
                format!(
                    "revision {} aborted by request",
                    revision.unwrap_or_default()
                ),
            );
            if let Some((i, _)) = steps::current(&self.st.steps) {
                steps::mark_finished(
                    &mut self.st.steps,
                    i,
                    StepState::Failed,
                    "aborted by request".into(),
                    self.obs.now,
                );
            }
            return self.fail_run("aborted by request".into());
        }
        self.advance();
    }

    /// Starts revision N+1 of the current spec.
    fn start_revision(&mut self) {
        let revision = self.st.revision.unwrap_or(0) + 1;
        let mut overridden = None;
        if let Some(freeze) = &self.obs.frozen {
            match &self.obs.requests.freeze_override {
                Some((r, by)) if *r == revision => {
                    let what = format!("{by} overrode the freeze ({})", freeze.why);
                    self.note(
                        true,
                        "FreezeOverridden",
                        format!("revision {revision} starts inside a freeze window: {what}"),
                    );
                    overridden = Some(what);
                }
                _ => {
                    let until = freeze
                        .until
                        .round(jiff::Unit::Second)
                        .unwrap_or(freeze.until);
                    let left = freeze.until.duration_since(self.obs.now).unsigned_abs();
                    self.waiting = Some((
                        "Frozen",
                        format!(
                            "a new revision waits until {until}: {}; to start it now, someone allowed to approve runs: kubectl annotate release {} --overwrite {}={revision} {}=<your user name>",
                            freeze.why,
                            self.obs.name,
                            crate::labels::request::OVERRIDE_FREEZE,
                            crate::labels::request::OVERRIDE_BY,
                        ),
                    ));
                    self.requeue = Some(left.max(Duration::from_secs(1)));
                    return;
                }
            }
        }
        if let Some(problem) = self.traffic_service_problem() {
            self.blocked = Some(problem);
            return;
        }
        self.st.freeze_overridden_by = overridden;
        self.st.approved_by = None;
        self.st.template_hash = Some(self.obs.template_hash.clone());
        let target = self.st.active_color.map_or(Color::Blue, Color::other);
        self.st.revision = Some(revision);
        self.st.revision_hash = Some(self.obs.hash.clone());
        self.st.version = Some(self.obs.spec.version.clone());
        self.st.phase = Some(Phase::Pending);
        let gates = &self.obs.gates;
        self.st.steps = steps::pending(&steps::gated(
            self.obs.spec,
            gates.promotion.is_some(),
            gates.approval.is_some(),
        ));
        self.st.checks.clear();
        self.st.dependencies.clear();
        self.st.failure = None;
        self.st.target_color = Some(target);
        self.st.run_started_at = Some(Time(self.obs.now));
        self.effect = Some(Effect::RecordRevision { revision });
        self.note(
            false,
            "RevisionStarted",
            format!(
                "revision {revision} ({}) started; deploying into {}",
                self.obs.spec.version,
                target.as_str()
            ),
        );
    }

    /// A Service the revision must steer is missing or cannot be steered.
    fn traffic_service_problem(&self) -> Option<(&'static str, String)> {
        let name = self.traffic_service_name()?;
        match self.obs.world.traffic_service.as_ref()? {
            ServiceState::Missing => Some((
                "ServiceMissing",
                format!(
                    "Service {name} does not exist in this namespace; create it, the release starts when it appears"
                ),
            )),
            ServiceState::Unsteerable(why) => Some((
                "ServiceUnsteerable",
                format!("Service {name} cannot be steered: {why}"),
            )),
            ServiceState::Selects(_) => None,
        }
    }

    fn traffic_service_name(&self) -> Option<&str> {
        let strategy = &self.obs.spec.strategy;
        match strategy.type_ {
            StrategyType::BlueGreen => strategy
                .blue_green
                .as_ref()
                .map(|b| b.active_service.as_str()),
            StrategyType::Recreate => strategy
                .recreate
                .as_ref()
                .and_then(|r| r.service.as_deref()),
        }
    }

    fn target(&self) -> Color {
        self.st.target_color.unwrap_or(Color::Blue)
    }

    fn revision(&self) -> i64 {
        self.st.revision.unwrap_or_default()
    }

    /// Runs steps until one needs an effect or a wait.
    fn advance(&mut self) {
        // Each pass finishes a step or stops, so this ends.
        for _ in 0..64 {
            let Some((i, step)) = steps::current(&self.st.steps) else {
                let result = if self.rolling_back() {
                    Phase::RolledBack
                } else {
                    Phase::Ready
                };
                let reason = self.st.failure.clone().unwrap_or_default();
                return self.end_run(result, reason);
            };
            self.st.phase = Some(step.phase());
            let now = self.obs.now;
            match self.handle(step) {
                Outcome::Done(message) => {
                    steps::mark_finished(&mut self.st.steps, i, StepState::Succeeded, message, now)
                }
                Outcome::Skip(message) => {
                    steps::mark_finished(&mut self.st.steps, i, StepState::Skipped, message, now)
                }
                Outcome::Act(effect, message) => {
                    steps::mark_running(&mut self.st.steps, i, message, now);
                    if let Effect::RunJob { kind, revision } = &effect
                        && let Some(s) = self.st.steps.get_mut(i)
                        && s.job.is_none()
                    {
                        s.job = Some(render::job_name(self.obs.name, kind, *revision));
                    }
                    self.effect = Some(effect);
                    return;
                }
                Outcome::Wait(message, requeue) => {
                    steps::mark_running(&mut self.st.steps, i, message, now);
                    self.requeue = requeue;
                    return;
                }
                Outcome::Fail(message) => {
                    steps::mark_finished(
                        &mut self.st.steps,
                        i,
                        StepState::Failed,
                        message.clone(),
                        now,
                    );
                    if step.is_undo() {
                        // An undo that cannot be done is reported; the rest still runs.
                        self.note(true, "UndoFailed", message);
                        continue;
                    }
                    return self.fail_run(format!("{} failed: {message}", step.name()));
                }
            }
        }
    }

    fn rolling_back(&self) -> bool {
        self.st
            .steps
            .iter()
            .any(|s| Step::from_name(&s.name).is_some_and(Step::is_undo))
    }

    /// The revision failed: undo what it changed, or stop if it changed
    /// nothing (or automatic rollback is off). The undo starts in the next
    /// reconcile, once RollingBack is recorded: an undo effect performed in
    /// this one and then lost with its status write would leave a status
    /// that runs forward again over an undone world (say, once a newer spec
    /// is withdrawn).
    fn fail_run(&mut self, reason: String) {
        self.st.failure = Some(reason.clone());
        let now = self.obs.now;
        // A step still running (a newer spec superseded it) fails with the
        // run; left Running it would be the first open step and run on,
        // forward, in the middle of the rollback.
        for s in self
            .st
            .steps
            .iter_mut()
            .filter(|s| s.state == StepState::Running)
        {
            s.state = StepState::Failed;
            s.message = Some(reason.clone());
            s.finished_at = Some(Time(now));
        }
        for s in self
            .st
            .steps
            .iter_mut()
            .filter(|s| s.state == StepState::Pending)
        {
            s.state = StepState::Skipped;
            s.message = Some("not run: the revision failed".into());
            s.finished_at = Some(Time(now));
        }
        if !self.anything_changed() {
            return self.end_run(Phase::Failed, format!("{reason}; nothing was changed"));
        }
        let automatic = self
            .obs
            .spec
            .rollback
            .as_ref()
            .and_then(|r| r.automatic)
            .unwrap_or(true);
        if !automatic {
            return self.end_run(
                Phase::Failed,
                format!("{reason}; automatic rollback is off, left as it is"),
            );
        }
        if !self.rolling_back() {
            let migrated = self.migration_seen();
            self.st
                .steps
                .extend(steps::pending(&steps::undo(&self.st, migrated)));
            self.st.phase = Some(Phase::RollingBack);
            self.requeue = Some(POD_POLL);
            self.note(
                true,
                "RollingBack",
                format!("revision {} rolling back: {reason}", self.revision()),
            );
        }
    }

    /// Ends the current revision with `result` and records it.
    fn end_run(&mut self, result: Phase, reason: String) {
        self.st.phase = Some(result);
        if result == Phase::Failed {
            // The final word, including whether anything was changed.
            self.st.failure = Some(reason.clone());
        }
        let revision = self.revision();
        let version = self
            .st
            .version
            .clone()
            .unwrap_or_else(|| self.obs.spec.version.clone());
        if result == Phase::Ready {
            self.st.stable_revision = Some(revision);
            // BlueGreen set it at cutover; Recreate has no cutover, and
            // without it every Recreate revision would target blue and stop
            // the wrong color.
            self.st.active_color = Some(self.target());
            self.note(
                false,
                "Ready",
                format!(
                    "revision {revision} ({version}) is serving on {}",
                    self.target().as_str()
                ),
            );
        } else {
            self.note(
                true,
                phase_name(result),
                format!(
                    "revision {revision} ({version}) {}: {reason}",
                    phase_name(result)
                ),
            );
        }
        let undone = self
            .st
            .steps
            .iter()
            .filter(|s| {
                s.state == StepState::Succeeded
                    && Step::from_name(&s.name).is_some_and(Step::is_undo)
            })
            .filter_map(|s| s.message.clone())
            .collect();
        let entry = HistoryEntry {
            revision,
            version,
            result,
            reason: (result != Phase::Ready).then_some(reason),
            started_at: self.st.run_started_at.clone(),
            finished_at: Some(Time(self.obs.now)),
            approved_by: self.st.approved_by.clone(),
            freeze_overridden_by: self.st.freeze_overridden_by.clone(),
            changes: self.obs.spec.changes.clone(),
            undone,
            left_as_is: left_as_is(&self.st),
            steps: self
                .st
                .steps
                .iter()
                .filter(|s| s.started_at.is_some() && s.state != StepState::Skipped)
                .map(|s| StepStatus {
                    message: (s.state == StepState::Failed)
                        .then(|| s.message.clone())
                        .flatten(),
                    ..s.clone()
                })
                .collect(),
        };
        self.st.history.retain(|h| h.revision != revision);
        self.st.history.insert(0, entry);
        let limit = self
            .obs
            .spec
            .history_limit
            .map_or(DEFAULT_HISTORY_LIMIT, |l| l as usize);
        self.st.history.truncate(limit);
    }

    /// A Ready revision stays as applied: a hand-edited or deleted active
    /// Deployment is put back.
    fn keep_ready(&mut self) {
        let Some(color) = self.st.active_color else {
            return;
        };
        let revision = self.revision();
        match self.obs.deployment(color) {
            None => {
                self.note(
                    true,
                    "Drift",
                    format!(
                        "Deployment of {} was deleted; recreating it",
                        color.as_str()
                    ),
                );
                self.effect = Some(Effect::ApplyDeployment { color, revision });
            }
            Some(d) => {
                let applied = self.st.applied_generations.get(color.as_str()).copied();
                if applied.is_some_and(|g| g != d.generation) {
                    self.note(
                        true,
                        "Drift",
                        format!(
                            "Deployment of {} was changed outside the release; restoring it",
                            color.as_str()
                        ),
                    );
                    self.effect = Some(Effect::ApplyDeployment { color, revision });
                }
            }
        }
    }

    fn handle(&mut self, step: Step) -> Outcome {
        match step {
            // Validation stalls a Release that asks for preflight, backup,
            // config or migration before a revision starts, so these steps
            // have nothing to do here.
            Step::Promote => self.promote(),
            Step::Approve => self.approve(),
            Step::Preflight => self.preflight(),
            Step::Backup => self.backup(),
            Step::Config => self.config(),
            Step::Migrate => self.migrate(),
            Step::Stop => self.stop_old(),
            Step::Deploy => self.deploy(),
            Step::Verify => self.verify(),
            Step::CutOver => self.cut_over(),
            Step::Observe => self.observe(),
            Step::Complete => self.complete(),
            Step::RollBackTraffic => self.roll_back_traffic(),
            Step::ScaleDownNew => self.scale_down_new(),
            Step::RollBackMigration => self.roll_back_migration(),
            Step::RestoreConfig => self.restore_config(),
            Step::RestoreData => self.restore_data(),
        }
    }

    /// The promotion gate: the same build (version and pod template) Ready
    /// in a Release of the same name in an environment promoted from, for
    /// the soak time.
    fn promote(&self) -> Outcome {
        let Some((from, soak, upstream)) = &self.obs.gates.promotion else {
            return Outcome::Skip("no promotion gate".into());
        };
        let version = self.st.version.clone().unwrap_or_default();
        let from = from.join(" or ");
        match upstream {
            None => Outcome::Wait(
                format!("looking for {version} in {from}"),
                Some(Duration::from_millis(200)),
            ),
            Some(Upstream::NotYet(why)) => Outcome::Wait(
                format!("waiting for {version} to be Ready in {from}: {why}"),
                Some(UPSTREAM_POLL),
            ),
            Some(Upstream::Ready { at, since }) => {
                let due = since.checked_add(*soak).unwrap_or(*since);
                let soaked = crate::api::Duration::from(*soak);
                if self.obs.now >= due {
                    return Outcome::Done(format!(
                        "{version} Ready in {at} since {}, longer than the soak time {soaked}",
                        since.round(jiff::Unit::Second).unwrap_or(*since)
                    ));
                }
                let left = due.duration_since(self.obs.now).unsigned_abs();
                Outcome::Wait(
                    format!(
                        "{version} is Ready in {at}; soaking {soaked} until {}",
                        due.round(jiff::Unit::Second).unwrap_or(due)
                    ),
                    Some(left.min(UPSTREAM_POLL).max(Duration::from_millis(200))),
                )
            }
        }
    }

    /// The approval gate: an approval naming this revision, by someone
    /// other than the author when four eyes are required. Admission has
    /// checked who may approve; this re-checks what the approval is for.
    fn approve(&mut self) -> Outcome {
        let Some(distinct) = self.obs.gates.approval else {
            return Outcome::Skip("no approval required".into());
        };
        let revision = self.revision();
        let how = format!(
            "kubectl annotate release {} --overwrite {}={revision} {}=<your user name>",
            self.obs.name,
            crate::labels::request::APPROVE,
            crate::labels::request::APPROVER
        );
        match &self.obs.requests.approval {
            Some((r, by)) if *r == revision => {
                if distinct {
                    match &self.obs.requests.author {
                        None => {
                            return Outcome::Wait(
                                format!(
                                    "approved by {by}, but four eyes are required and who changed the spec last is unknown: the chart's author-stamping admission policy must be installed"
                                ),
                                None,
                            );
                        }
                        Some(author) if author == by => {
                            return Outcome::Wait(
                                format!(
                                    "{by} changed the spec and cannot approve it too (four eyes); someone else runs: {how}"
                                ),
                                None,
                            );
                        }
                        Some(_) => {}
                    }
                }
                self.st.approved_by = Some(by.clone());
                self.note(
                    false,
                    "Approved",
                    format!("revision {revision} approved by {by}"),
                );
                Outcome::Done(format!("approved by {by}"))
            }
            Some((r, _)) => Outcome::Wait(
                format!(
                    "waiting for approval of revision {revision} (the approval on record is for revision {r}): {how}"
                ),
                None,
            ),
            None => Outcome::Wait(
                format!("waiting for approval of revision {revision}: {how}"),
                None,
            ),
        }
    }

    /// Whether this revision's migration Job exists: it may have run even
    /// when the status write that recorded it was lost.
    fn migration_seen(&self) -> bool {
        self.obs.world.jobs.contains_key(&JobKind::Migration)
    }

    /// Whether the revision changed anything that must be undone.
    fn anything_changed(&self) -> bool {
        steps::anything_changed(&self.st.steps) || self.migration_seen()
    }

    /// What the revision itself declared: its record while it is undone (a
    /// newer spec may declare something else), the spec otherwise.
    fn declared(&self) -> (Option<&MigrationSpec>, Option<&BackupSpec>) {
        match &self.obs.world.record {
            Some(record) => (record.migration.as_ref(), record.backup.as_ref()),
            None => (
                self.obs.spec.migration.as_ref(),
                self.obs.spec.backup.as_ref(),
            ),
        }
    }

    /// Whether `step` performed its one-shot effect: such a step is marked
    /// Running only together with its effect, and never waits.
    fn acted(&self, step: Step) -> bool {
        self.st
            .steps
            .iter()
            .any(|s| s.name == step.name() && s.state == StepState::Running)
    }

    /// How far `step` has run past `limit`, if it has.
    fn overdue(&self, step: Step, limit: Duration) -> bool {
        let since = steps::started_at(&self.st.steps, step).unwrap_or(self.obs.now);
        since
            .checked_add(limit)
            .is_ok_and(|due| self.obs.now >= due)
    }

    /// Runs a runbook Job of this revision: `Ok` once it succeeded, the
    /// outcome to return until then. A Job that ran is never created again:
    /// `once` names the step whose recorded Job must not reappear.
    fn job(&self, kind: JobKind, step: Step, limit: Duration) -> Result<(), Outcome> {
        let revision = self.revision();
        let what = kind.describe();
        let name = render::job_name(self.obs.name, &kind, revision);
        match self.obs.world.jobs.get(&kind) {
            None => {
                let recorded = self
                    .st
                    .steps
                    .iter()
                    .any(|s| s.name == step.name() && s.job.as_deref() == Some(name.as_str()));
                if recorded && kind == JobKind::Migration {
                    return Err(Outcome::Fail(format!(
                        "the {what} {name} disappeared before its result was seen; a migration is never run twice: check the database, then retry the revision"
                    )));
                }
                Err(Outcome::Act(
                    Effect::RunJob { kind, revision },
                    format!("running the {what} {name}"),
                ))
            }
            Some(JobState::Running) => {
                // The Job's activeDeadlineSeconds ends it first; this is the
                // net for a Job whose deadline someone removed.
                if self.overdue(step, limit + JOB_GRACE) {
                    return Err(Outcome::Fail(format!(
                        "the {what} {name} did not finish within {}",
                        crate::api::Duration::from(limit)
                    )));
                }
                Err(Outcome::Wait(
                    format!("waiting for the {what} {name}"),
                    Some(JOB_POLL),
                ))
            }
            Some(JobState::Failed(why)) => {
                Err(Outcome::Fail(format!("the {what} {name} failed: {why}")))
            }
            Some(JobState::Succeeded) => Ok(()),
        }
    }

    /// Runbook 1.3: immutable copies of the listed ConfigMaps and Secrets,
    /// a VolumeSnapshot per listed claim and the backup Jobs, all before
    /// anything changes. A failure ends Failed with nothing changed.
    fn backup(&mut self) -> Outcome {
        let Some(spec) = self.obs.spec.backup.as_ref() else {
            return Outcome::Skip("no backups declared".into());
        };
        if spec.config_maps.is_empty()
            && spec.secrets.is_empty()
            && spec.volumes.is_empty()
            && spec.jobs.is_empty()
        {
            return Outcome::Skip("nothing listed to back up".into());
        }
        let revision = self.revision();
        let limit = spec.timeout.map_or(DEFAULT_BACKUP_TIMEOUT, Into::into);
        if !self.st.backups.iter().any(|b| b.revision == revision) {
            match &self.obs.world.backup_sources {
                None => {
                    return Outcome::Wait(
                        "looking up what to back up".into(),
                        Some(Duration::from_millis(200)),
                    );
                }
                Some(sources) if !sources.problems.is_empty() => {
                    return Outcome::Fail(sources.problems.join("; "));
                }
                Some(_) => {}
            }
            let record = render::backup_record(self.obs.name, spec, revision);
            let message = format!(
                "copying {} ConfigMap(s) and {} Secret(s), snapshotting {} claim(s)",
                record.config_maps.len(),
                record.secrets.len(),
                record.volume_snapshots.len()
            );
            self.st.backups.insert(0, record);
            return Outcome::Act(Effect::TakeBackups { revision }, message);
        }
        let mut waiting = Vec::new();
        for volume in &spec.volumes {
            let claim = &volume.persistent_volume_claim;
            let snapshot = render::snapshot_name(self.obs.name, claim, revision);
            match self.obs.world.snapshots.get(claim) {
                Some(SnapshotState::Ready) => {}
                Some(SnapshotState::Pending) => waiting.push(format!("VolumeSnapshot {snapshot}")),
                Some(SnapshotState::Failed(why)) => {
                    return Outcome::Fail(format!(
                        "VolumeSnapshot {snapshot} of claim {claim} failed: {why}"
                    ));
                }
                None => {
                    return Outcome::Fail(format!(
                        "VolumeSnapshot {snapshot} of claim {claim} disappeared before it was ready"
                    ));
                }
            }
        }
        for job in &spec.jobs {
            match self.job(JobKind::Backup(job.name.clone()), Step::Backup, limit) {
                Ok(()) => {}
                Err(Outcome::Wait(progress, _)) => waiting.push(progress),
                Err(other) => return other,
            }
        }
        if !waiting.is_empty() {
            if self.overdue(Step::Backup, limit) {
                return Outcome::Fail(format!(
                    "backups did not finish within {}: still waiting for {}",
                    crate::api::Duration::from(limit),
                    waiting.join(", ")
                ));
            }
            return Outcome::Wait(
                format!("waiting for {}", waiting.join(", ")),
                Some(JOB_POLL),
            );
        }
        Outcome::Done(format!(
            "backed up {} ConfigMap(s), {} Secret(s), {} volume(s) and {} Job(s) before revision {revision}",
            spec.config_maps.len(),
            spec.secrets.len(),
            spec.volumes.len(),
            spec.jobs.len()
        ))
    }

    /// Runbook 2.3: this revision's config, as immutable copies its pods
    /// alone mount, checked with the new image before anything runs it.
    fn config(&mut self) -> Outcome {
        let Some(config) = self.obs.spec.config.as_ref() else {
            return Outcome::Skip("no release-owned config".into());
        };
        let revision = self.revision();
        if !config.config_maps.is_empty() && !self.obs.world.config_written {
            return Outcome::Act(
                Effect::WriteConfig { revision },
                format!(
                    "writing {} ConfigMap(s) for revision {revision}",
                    config.config_maps.len()
                ),
            );
        }
        let names: Vec<String> = config
            .config_maps
            .iter()
            .map(|c| render::config_map_name(&c.name, revision))
            .collect();
        let mut message = if names.is_empty() {
            "no ConfigMaps to write".to_owned()
        } else {
            format!("wrote {}", names.join(", "))
        };
        if let Some(check) = &config.check {
            let limit = check
                .timeout
                .map_or(DEFAULT_CONFIG_CHECK_TIMEOUT, Into::into);
            if let Err(outcome) = self.job(JobKind::ConfigCheck, Step::Config, limit) {
                return outcome;
            }
            message.push_str("; the config check passed");
        }
        Outcome::Done(message)
    }

    /// Runbook 2.4: the migration Job, exactly once, then its verification.
    fn migrate(&mut self) -> Outcome {
        let Some(migration) = self.obs.spec.migration.as_ref() else {
            return Outcome::Skip("no migration declared".into());
        };
        let limit = migration
            .timeout
            .map_or(DEFAULT_MIGRATION_TIMEOUT, Into::into);
        if self.migration_seen() {
            // Remember the Job as soon as it is seen: the write that
            // recorded its creation may have been lost, and a migration
            // whose Job disappears must never be run again.
            let name = render::job_name(self.obs.name, &JobKind::Migration, self.revision());
            if let Some(s) = self
                .st
                .steps
                .iter_mut()
                .find(|s| s.name == Step::Migrate.name())
            {
                s.job = Some(name);
            }
        }
        if let Err(outcome) = self.job(JobKind::Migration, Step::Migrate, limit) {
            return outcome;
        }
        if migration.verify.is_some() {
            if let Err(outcome) = self.job(JobKind::MigrationVerify, Step::Migrate, limit) {
                return outcome;
            }
            return Outcome::Done("migrated; the verify Job passed".into());
        }
        Outcome::Done("migrated".into())
    }

    /// Runbook 4: the revision serves; backups and config of revisions no
    /// longer kept are deleted (4.3).
    fn complete(&mut self) -> Outcome {
        let serving = format!(
            "{} serving on {}",
            self.st.version.clone().unwrap_or_default(),
            self.target().as_str()
        );
        let spec = self.obs.spec;
        let retained =
            spec.backup.is_some() || spec.config.is_some() || !self.st.backups.is_empty();
        if !retained {
            return Outcome::Done(serving);
        }
        // Pruned together with the write that records Ready: a phase of
        // Ready must mean the runbook has ended.
        let keep = self.retained_revisions();
        self.st.backups.retain(|b| keep.contains(&b.revision));
        let message = format!("{serving}; backups and config kept for revisions {keep:?}");
        self.effect = Some(Effect::Prune { keep });
        Outcome::Done(message)
    }

    /// The revisions whose backups and config are kept: the last `keep`
    /// revisions, which include this one (what runs now and what a rollback
    /// of the next revision returns to).
    fn retained_revisions(&self) -> Vec<i64> {
        let keep = self.obs.spec.backup.as_ref().map_or(3, |b| b.keep.max(1));
        let revision = self.revision();
        (0..i64::from(keep))
            .map(|k| revision - k)
            .filter(|r| *r > 0)
            .collect()
    }

    /// The rollback policy with its defaults.
    fn policy(&self) -> crate::api::RollbackPolicy {
        self.obs.spec.rollback.clone().unwrap_or_default()
    }

    /// Undo: the down-migration, with the new image (it knows what it
    /// created), once the migration itself has stopped.
    fn roll_back_migration(&mut self) -> Outcome {
        let revision = self.revision();
        if self.obs.world.jobs.get(&JobKind::Migration) == Some(&JobState::Running) {
            return Outcome::Wait(
                "waiting for the migration Job to stop before rolling it back".into(),
                Some(JOB_POLL),
            );
        }
        if !self.policy().run_migration_rollback.unwrap_or(true) {
            return Outcome::Skip(format!(
                "database left at revision {revision}'s schema: rollback.runMigrationRollback is off"
            ));
        }
        let Some(migration) = self.declared().0.cloned() else {
            return Outcome::Skip(format!(
                "database left at revision {revision}'s schema: no migration rollback defined"
            ));
        };
        if migration.rollback.is_none() {
            return Outcome::Skip(format!(
                "database left at revision {revision}'s schema: no migration rollback defined"
            ));
        }
        let limit = migration
            .timeout
            .map_or(DEFAULT_MIGRATION_TIMEOUT, Into::into);
        match self.job(JobKind::MigrationRollback, Step::RollBackMigration, limit) {
            Ok(()) => Outcome::Done(format!(
                "migration of revision {revision} rolled back by {}",
                render::job_name(self.obs.name, &JobKind::MigrationRollback, revision)
            )),
            Err(outcome) => outcome,
        }
    }

    /// Undo: the backed-up ConfigMaps and Secrets put back as they were.
    fn restore_config(&mut self) -> Outcome {
        let revision = self.revision();
        if !self.policy().restore_config.unwrap_or(true) {
            return Outcome::Skip(
                "ConfigMaps and Secrets left as they are: rollback.restoreConfig is off".into(),
            );
        }
        let Some(record) = self.st.backups.iter().find(|b| b.revision == revision) else {
            return Outcome::Skip("no ConfigMap or Secret was copied".into());
        };
        let mut restored: Vec<String> = record
            .config_maps
            .keys()
            .map(|n| format!("ConfigMap {n}"))
            .collect();
        restored.extend(record.secrets.keys().map(|n| format!("Secret {n}")));
        if self.acted(Step::RestoreConfig) {
            return Outcome::Done(format!(
                "restored {} as copied before revision {revision}",
                restored.join(", ")
            ));
        }
        Outcome::Act(
            Effect::RestoreConfig { revision },
            format!("restoring {}", restored.join(", ")),
        )
    }

    /// Undo (opt-in, it loses writes made since the backup): claims restored
    /// from their snapshots with the previous color pointed at them, and the
    /// backups' restore Jobs.
    fn restore_data(&mut self) -> Outcome {
        let revision = self.revision();
        let Some(record) = self
            .st
            .backups
            .iter()
            .find(|b| b.revision == revision)
            .cloned()
        else {
            return Outcome::Skip("no data was backed up".into());
        };
        if !self.policy().restore_volumes.unwrap_or(false) {
            return Outcome::Skip(format!(
                "data left as it is: rollback.restoreVolumes is off (the backups of revision {revision} are kept)"
            ));
        }
        let mut done = Vec::new();
        if !record.volume_snapshots.is_empty() {
            let previous = self.target().other();
            let Some(stable) = self.st.stable_revision else {
                return Outcome::Skip(format!(
                    "volumes left as they are: no previous version to mount the claims restored from the snapshots of revision {revision}"
                ));
            };
            let restored: BTreeMap<String, String> = record
                .volume_snapshots
                .keys()
                .map(|claim| (claim.clone(), render::restored_claim_name(claim, revision)))
                .collect();
            if restored
                .iter()
                .any(|(claim, to)| self.st.restored_claims.get(claim) != Some(to))
            {
                self.st.restored_claims.extend(restored.clone());
                return Outcome::Act(
                    Effect::RestoreVolumes {
                        revision,
                        color: previous,
                        stable,
                    },
                    format!(
                        "restoring {} from VolumeSnapshots and pointing {} at them",
                        describe_claims(&restored),
                        previous.as_str()
                    ),
                );
            }
            match self.obs.deployment(previous) {
                Some(d) if d.observed_current && d.available >= d.desired => {}
                _ => {
                    return Outcome::Wait(
                        format!(
                            "waiting for {} to run on the restored claims",
                            previous.as_str()
                        ),
                        Some(JOB_POLL),
                    );
                }
            }
            done.push(format!(
                "{} now mounts {}",
                previous.as_str(),
                describe_claims(&restored)
            ));
        }
        let declared = self.declared().1.cloned();
        let limit = declared
            .as_ref()
            .and_then(|b| b.timeout)
            .map_or(DEFAULT_BACKUP_TIMEOUT, Into::into);
        let restores: Vec<String> = declared
            .iter()
            .flat_map(|b| b.jobs.iter())
            .filter(|j| {
                j.restore.is_some()
                    && record.jobs.contains(&render::job_name(
                        self.obs.name,
                        &JobKind::Backup(j.name.clone()),
                        revision,
                    ))
            })
            .map(|j| j.name.clone())
            .collect();
        for name in restores {
            if let Err(outcome) = self.job(JobKind::Restore(name.clone()), Step::RestoreData, limit)
            {
                return outcome;
            }
            done.push(format!("backup {name:?} restored"));
        }
        if done.is_empty() {
            return Outcome::Skip("data left as it is: no backup has a restore Job".into());
        }
        Outcome::Done(done.join("; "))
    }

    /// Recreate: scale the running version to zero and wait for its pods.
    fn stop_old(&self) -> Outcome {
        let old = self.target().other();
        match self.obs.deployment(old) {
            None => Outcome::Done("nothing running to stop".into()),
            Some(d) if d.desired > 0 => Outcome::Act(
                Effect::Scale {
                    color: old,
                    replicas: 0,
                },
                format!("stopping {}", old.as_str()),
            ),
            Some(_) => match self.obs.world.pods {
                Some((color, n)) if color == old && n > 0 => Outcome::Wait(
                    format!("waiting for {n} {} pods to terminate", old.as_str()),
                    Some(POD_POLL),
                ),
                Some((color, _)) if color == old => {
                    Outcome::Done(format!("{} stopped", old.as_str()))
                }
                // Pods are only counted once Stopping is recorded (the scale
                // may have happened before a crash): count them first.
                _ => Outcome::Wait(format!("counting {} pods", old.as_str()), Some(POD_POLL)),
            },
        }
    }

    fn deploy(&self) -> Outcome {
        let (target, revision) = (self.target(), self.revision());
        let replicas = self.obs.spec.workload.replicas;
        let name = target.as_str();
        let Some(d) = self.obs.deployment(target) else {
            return Outcome::Act(
                Effect::ApplyDeployment {
                    color: target,
                    revision,
                },
                format!("creating {name}"),
            );
        };
        if d.revision != Some(revision) || d.desired != replicas {
            return Outcome::Act(
                Effect::ApplyDeployment {
                    color: target,
                    revision,
                },
                format!("rolling out revision {revision} to {name}"),
            );
        }
        if d.observed_current
            && let Some(message) = &d.deadline_exceeded
        {
            return Outcome::Fail(format!(
                "{name} did not become available in time: {message}"
            ));
        }
        if !d.is_available(replicas) {
            return Outcome::Wait(
                format!("{name} {}/{replicas} available", d.available.min(replicas)),
                None,
            );
        }
        let service = match self.obs.spec.strategy.type_ {
            StrategyType::BlueGreen => self
                .obs
                .spec
                .strategy
                .blue_green
                .as_ref()
                .and_then(|b| b.preview_service.clone())
                .map(|s| (s, self.obs.world.preview_service.as_ref())),
            StrategyType::Recreate => self
                .traffic_service_name()
                .map(|s| (s.to_owned(), self.obs.world.traffic_service.as_ref())),
        };
        if let Some((service, state)) = service {
            match state {
                Some(ServiceState::Selects(Some(c))) if *c == target => {}
                Some(ServiceState::Selects(_)) => {
                    return Outcome::Act(
                        Effect::PointService {
                            service: service.clone(),
                            color: target,
                        },
                        format!("pointing Service {service} at {name}"),
                    );
                }
                Some(ServiceState::Missing) | None => {
                    return Outcome::Fail(format!("Service {service} does not exist"));
                }
                Some(ServiceState::Unsteerable(why)) => {
                    return Outcome::Fail(format!("Service {service} cannot be steered: {why}"));
                }
            }
        }
        Outcome::Done(format!("{name} {replicas}/{replicas} available"))
    }

    /// Dependencies reachable and room for the new color, retried until the
    /// preflight timeout; nothing has changed yet, so a failure ends Failed.
    fn preflight(&self) -> Outcome {
        let Some(declared) = preflight::declared(self.obs.spec) else {
            return Outcome::Skip("no preflight checks declared".into());
        };
        let since = steps::started_at(&self.st.steps, Step::Preflight).unwrap_or(self.obs.now);
        match preflight::standing(declared, &self.st.dependencies, since, self.obs.now) {
            preflight::Standing::Passed(summary) => Outcome::Done(summary),
            preflight::Standing::Failed(why) => Outcome::Fail(why),
            preflight::Standing::Waiting(progress) => {
                Outcome::Wait(progress, Some(preflight::RETRY))
            }
        }
    }

    fn verify(&self) -> Outcome {
        self.checks(Step::Verify, CheckPhase::PreCutover)
            .unwrap_or_else(Outcome::Done)
    }

    /// How the checks of `phase`, measured since `step` started, stand:
    /// `Err(summary)` when they all passed, the outcome to return otherwise.
    fn checks(&self, step: Step, phase: CheckPhase) -> Result<Outcome, String> {
        let since = steps::started_at(&self.st.steps, step).unwrap_or(self.obs.now);
        match verify::standing(self.obs.spec, phase, &self.st.checks, since) {
            Standing::Passed(summary) => Err(summary),
            Standing::Failed(why) => Ok(Outcome::Fail(why)),
            Standing::Running(progress, next) => {
                let wait = next.map(|t| {
                    let left = t.duration_since(self.obs.now).unsigned_abs();
                    left.max(Duration::from_millis(200))
                });
                Ok(Outcome::Wait(progress, wait))
            }
        }
    }

    fn cut_over(&mut self) -> Outcome {
        let (target, revision) = (self.target(), self.revision());
        let Some(bg) = self.obs.spec.strategy.blue_green.as_ref() else {
            return Outcome::Skip("Recreate has no cutover".into());
        };
        let service = bg.active_service.clone();
        match self.obs.world.traffic_service.as_ref() {
            Some(ServiceState::Selects(Some(c))) if *c == target => {
                self.st.active_color = Some(target);
                Outcome::Done(format!("Service {service} now selects {}", target.as_str()))
            }
            Some(ServiceState::Selects(_)) => {
                let promoted = self.obs.requests.promote == Some(revision);
                if !bg.auto_cutover && !promoted {
                    return Outcome::Wait(
                        format!(
                            "waiting for a promote request: kubectl annotate release --overwrite <name> {}={revision}",
                            crate::labels::request::PROMOTE
                        ),
                        None,
                    );
                }
                // Traffic only ever moves to a color that is fully up now,
                // not merely when Deploy finished (it may have been scaled
                // or broken while waiting for a promote).
                let replicas = self.obs.spec.workload.replicas;
                let Some(d) = self.obs.deployment(target) else {
                    return Outcome::Fail(format!(
                        "the {} Deployment disappeared before cutover",
                        target.as_str()
                    ));
                };
                if !d.is_available(replicas) {
                    return Outcome::Wait(
                        format!(
                            "{} is {}/{replicas} available; traffic moves once it is fully available",
                            target.as_str(),
                            d.available.min(replicas)
                        ),
                        None,
                    );
                }
                if !bg.auto_cutover {
                    self.note(
                        false,
                        "PromoteRequested",
                        format!("revision {revision} promoted by request"),
                    );
                }
                Outcome::Act(
                    Effect::PointService {
                        service: service.clone(),
                        color: target,
                    },
                    format!("switching Service {service} to {}", target.as_str()),
                )
            }
            Some(ServiceState::Missing) | None => {
                Outcome::Fail(format!("Service {service} does not exist"))
            }
            Some(ServiceState::Unsteerable(why)) => {
                Outcome::Fail(format!("Service {service} cannot be steered: {why}"))
            }
        }
    }

    /// After cutover: keep the old color warm for the scale-down delay, then
    /// scale it down.
    fn observe(&mut self) -> Outcome {
        if self.obs.spec.strategy.type_ == StrategyType::BlueGreen
            && let Ok(outcome) = self.checks(Step::Observe, CheckPhase::PostCutover)
        {
            return outcome;
        }
        let old = self.target().other();
        let delay = self
            .obs
            .spec
            .strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.scale_down_delay)
            .map_or(DEFAULT_SCALE_DOWN_DELAY, Into::into);
        match self.obs.deployment(old) {
            Some(d) if d.desired > 0 => {
                let cut = steps::finished_at(&self.st.steps, Step::CutOver).unwrap_or(self.obs.now);
                let due = cut.checked_add(delay).unwrap_or(cut);
                if self.obs.now < due {
                    let left = due.duration_since(self.obs.now).unsigned_abs();
                    let until = due.round(jiff::Unit::Second).unwrap_or(due);
                    return Outcome::Wait(
                        format!(
                            "{} stays up until {until} for an instant switch back",
                            old.as_str()
                        ),
                        Some(left),
                    );
                }
                Outcome::Act(
                    Effect::Scale {
                        color: old,
                        replicas: 0,
                    },
                    format!("scaling {} down", old.as_str()),
                )
            }
            _ => Outcome::Done(format!("{} scaled down", old.as_str())),
        }
    }

    /// Undo: traffic back to the previous version, recreating it from its
    /// recorded revision when it no longer runs.
    fn roll_back_traffic(&mut self) -> Outcome {
        let target = self.target();
        let previous = target.other();
        let Some(stable) = self.st.stable_revision else {
            return Outcome::Done("first revision: no previous version to return to".into());
        };
        let service = self.traffic_service_name().map(str::to_owned);
        let recreate = self.obs.spec.strategy.type_ == StrategyType::Recreate;
        let selects = |color: Color| matches!(self.obs.world.traffic_service, Some(ServiceState::Selects(Some(c))) if c == color);
        let cut_over = steps::succeeded(&self.st.steps, Step::CutOver) || selects(target);
        let name = previous.as_str();
        if !recreate && !cut_over {
            self.st.active_color = Some(previous);
            return Outcome::Done(format!("traffic never left {name}"));
        }
        let running = match self.obs.deployment(previous) {
            Some(d) if d.revision == Some(stable) && d.desired > 0 => d,
            _ if self.obs.world.stable_record => {
                return Outcome::Act(
                    Effect::RestoreDeployment {
                        color: previous,
                        revision: stable,
                    },
                    format!("recreating {name} from revision {stable}"),
                );
            }
            _ => {
                return Outcome::Fail(format!(
                    "cannot bring {name} back: the record of revision {stable} is gone"
                ));
            }
        };
        if running.available < running.desired {
            return Outcome::Wait(
                format!(
                    "waiting for {name} {}/{} available",
                    running.available, running.desired
                ),
                None,
            );
        }
        if let Some(service) = service
            && !selects(previous)
        {
            return Outcome::Act(
                Effect::PointService {
                    service: service.clone(),
                    color: previous,
                },
                format!("switching Service {service} back to {name}"),
            );
        }
        self.st.active_color = Some(previous);
        Outcome::Done(format!("traffic back on {name} (revision {stable})"))
    }

    fn scale_down_new(&self) -> Outcome {
        let target = self.target();
        match self.obs.deployment(target) {
            Some(d) if d.desired > 0 => Outcome::Act(
                Effect::Scale {
                    color: target,
                    replicas: 0,
                },
                format!("scaling {} down", target.as_str()),
            ),
            Some(_) => Outcome::Done(format!("{} scaled down", target.as_str())),
            None => Outcome::Done(format!("{} was never created", target.as_str())),
        }
    }

    fn note(&mut self, warning: bool, reason: &str, message: String) {
        self.notes.push(Note {
            warning,
            reason: reason.to_owned(),
            message,
        });
    }

    /// Sets the kstatus conditions from where the revision is.
    fn finish(mut self, before: Option<Phase>) -> Plan {
        let generation = self.obs.generation;
        let now: Timestamp = self.obs.now;
        let phase = self.st.phase.unwrap_or(Phase::Pending);
        let message = current_message(&self.st).unwrap_or_else(|| phase_name(phase).to_owned());
        let failure = self.st.failure.clone();
        let left = left_as_is(&self.st);
        let conds = &mut self.st.conditions;
        if let Some((reason, message)) = &self.blocked {
            conditions::stalled(conds, reason, message, generation, now);
        } else if let Some((reason, message)) = &self.waiting {
            conditions::progressing(conds, reason, message, generation, now);
        } else {
            match phase {
                Phase::Ready => {
                    conditions::remove(conds, conditions::STALLED);
                    conditions::set(
                        conds,
                        Desired::truthy(conditions::READY, "Ready", message.clone()),
                        generation,
                        now,
                    );
                    conditions::set(
                        conds,
                        Desired::falsy(conditions::RECONCILING, "Ready", message),
                        generation,
                        now,
                    );
                }
                Phase::RolledBack | Phase::Failed => {
                    let reason = phase_name(phase);
                    let mut message = failure.unwrap_or(message);
                    if phase == Phase::RolledBack && !left.is_empty() {
                        message = format!("{message}; left as is: {}", left.join("; "));
                    }
                    conditions::stalled(conds, reason, &message, generation, now);
                }
                other => {
                    conditions::progressing(conds, phase_name(other), &message, generation, now);
                }
            }
        }
        if self.st.phase != before
            && let Some(phase) = self.st.phase
            && !phase.is_terminal()
            && !matches!(phase, Phase::Pending | Phase::RollingBack)
        {
            let message = current_message(&self.st).unwrap_or_default();
            self.notes.push(Note {
                warning: false,
                reason: phase_name(phase).to_owned(),
                message,
            });
        }
        Plan {
            status: self.st,
            effect: self.effect,
            requeue: self.requeue,
            notes: self.notes,
        }
    }
}

fn describe_claims(claims: &BTreeMap<String, String>) -> String {
    claims
        .iter()
        .map(|(from, to)| format!("{to} (in place of {from})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a rollback left as it was: the messages of the undo steps it
/// skipped.
pub fn left_as_is(st: &ReleaseStatus) -> Vec<String> {
    st.steps
        .iter()
        .filter(|s| {
            s.state == StepState::Skipped && Step::from_name(&s.name).is_some_and(Step::is_undo)
        })
        .filter_map(|s| s.message.clone())
        .collect()
}

fn current_message(st: &ReleaseStatus) -> Option<String> {
    steps::current(&st.steps)
        .and_then(|(i, _)| st.steps.get(i))
        .or_else(|| {
            st.steps
                .iter()
                .rev()
                .find(|s| s.state != StepState::Skipped)
        })
        .and_then(|s| s.message.clone())
}

/// The PascalCase name of a phase, used as condition and event reason.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Waiting => "Waiting",
        Phase::AwaitingApproval => "AwaitingApproval",
        Phase::Preflight => "Preflight",
        Phase::BackingUp => "BackingUp",
        Phase::Stopping => "Stopping",
        Phase::Migrating => "Migrating",
        Phase::Deploying => "Deploying",
        Phase::Verifying => "Verifying",
        Phase::CuttingOver => "CuttingOver",
        Phase::Observing => "Observing",
        Phase::Ready => "Ready",
        Phase::RollingBack => "RollingBack",
        Phase::RolledBack => "RolledBack",
        Phase::Failed => "Failed",
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
