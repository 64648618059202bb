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

use super::{
    Effect, Note, Observed, Plan, ServiceState, preflight, render,
    steps::{self, Step},
    verify::{self, Standing},
};
use crate::{
    api::{
        Color, Phase, ReleaseStatus,
        checks::CheckPhase,
        release::StrategyType,
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

#[path = "planner_data.rs"]
mod data;
#[path = "planner_gates.rs"]
mod gates;

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
