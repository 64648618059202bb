//! Planner tests: examples and property tests of its invariants.
//!
//! `Sim` replays the controller loop against a small simulated world: it
//! observes the way `observe` does (pods only while Stopping, the stable
//! record only while RollingBack), plans, performs the effect the way
//! `execute` and Kubernetes would, and writes the plan's status — or crashes
//! before or after the effect without writing it. Every plan, effect and
//! status write is checked against the runbook's invariants as it happens,
//! so the examples and the property tests share one set of checks.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use proptest::{prelude::*, test_runner::Config};
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{ReleaseSpec, status::StepStatus},
    runbook::{DeploymentState, JobKind, JobState, Requests, SnapshotState, render::Shipped},
};

const ACTIVE: &str = "shop";
const PREVIEW: &str = "shop-preview";
/// Ticks after which a Deployment whose pods never get ready reports
/// ProgressDeadlineExceeded.
const DEADLINE_TICKS: u32 = 4;

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A BlueGreen spec with `extra` merged in.
fn spec(extra: Value) -> ReleaseSpec {
    let mut base = json!({
        "version": "v1",
        "workload": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "shop:v1"}]}}},
        "strategy": {"type": "BlueGreen", "blueGreen": {"activeService": ACTIVE}},
    });
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap_or_else(|e| panic!("test spec does not parse: {e}"))
}

/// A Recreate spec steering the `shop` Service, with `extra` merged in.
fn recreate(extra: Value) -> ReleaseSpec {
    let mut base = json!({"strategy": {"type": "Recreate", "blueGreen": null, "recreate": {"service": ACTIVE}}});
    merge(&mut base, extra);
    spec(base)
}

fn hash_of(spec: &ReleaseSpec) -> String {
    Shipped::of(spec).hash()
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

fn undoing(st: &ReleaseStatus) -> bool {
    st.steps
        .iter()
        .any(|s| Step::from_name(&s.name).is_some_and(Step::is_undo))
}

fn step_state(st: &ReleaseStatus, step: Step) -> Option<StepState> {
    st.steps
        .iter()
        .find(|s| s.name == step.name())
        .map(|s| s.state)
}

fn finished(state: Option<StepState>) -> bool {
    matches!(
        state,
        Some(StepState::Succeeded | StepState::Failed | StepState::Skipped)
    )
}

fn stalled_reason(st: &ReleaseStatus) -> Option<String> {
    conditions::get(&st.conditions, conditions::STALLED)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
}

/// One color's Deployment and its pods, as the Deployment controller and
/// the kubelet would move them.
#[derive(Clone, Debug)]
struct Dep {
    revision: i64,
    hash: String,
    desired: i32,
    available: i32,
    pods: u32,
    generation: i64,
    observed_generation: i64,
    /// Ticks since the current rollout began.
    age: u32,
    observe_after: u32,
    ready_after: u32,
    never_ready: bool,
    deadline_exceeded: bool,
}

impl Dep {
    fn state(&self) -> DeploymentState {
        DeploymentState {
            revision: Some(self.revision),
            desired: self.desired,
            updated: self.available,
            available: self.available,
            observed_current: self.observed_generation >= self.generation,
            deadline_exceeded: self
                .deadline_exceeded
                .then(|| "ReplicaSet has timed out progressing".into()),
            generation: self.generation,
        }
    }

    fn tick(&mut self) {
        self.age += 1;
        if self.age > self.observe_after {
            self.observed_generation = self.generation;
        }
        if self.desired == 0 {
            // Terminating pods go away one per tick.
            self.available = 0;
            self.pods = self.pods.saturating_sub(1);
            return;
        }
        self.pods = self.pods.max(self.desired.unsigned_abs());
        if self.observed_generation < self.generation {
            return;
        }
        if self.never_ready {
            self.deadline_exceeded |= self.age >= DEADLINE_TICKS;
        } else if self.age >= self.ready_after {
            self.available = self.desired;
        }
    }
}

/// What a ControllerRevision records.
#[derive(Clone, Debug)]
struct Record {
    hash: String,
    replicas: i32,
    /// The spec it was recorded from (what `execute` reads the revision's
    /// migration rollback and restore Jobs from).
    spec: ReleaseSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// The effect is performed and the status written.
    No,
    /// The plan is made, then the controller dies.
    BeforeEffect,
    /// The effect is performed, then the controller dies before the status
    /// write.
    AfterEffect,
}

struct Sim {
    now: Timestamp,
    generation: i64,
    spec: ReleaseSpec,
    status: ReleaseStatus,
    blue: Option<Dep>,
    green: Option<Dep>,
    traffic: ServiceState,
    /// The traffic Service as it was before it was deleted.
    traffic_saved: Option<ServiceState>,
    preview: ServiceState,
    records: BTreeMap<i64, Record>,
    requests: Requests,
    /// Hashes whose pods never become ready.
    bad: BTreeSet<String>,
    rng: u64,
    /// Revision → hash, from every status written so far.
    hashes: BTreeMap<i64, String>,
    /// Revisions whose new color a rollback has scaled down.
    undo_scaled: BTreeSet<i64>,
    /// The traffic Service went missing during the current revision.
    glitch: bool,
    /// Runbook Jobs that exist, by revision and kind: their age in ticks.
    jobs: BTreeMap<(i64, JobKind), u32>,
    /// How many ticks a Job runs before it finishes.
    job_ticks: u32,
    /// How often each runbook Job was created.
    job_creations: BTreeMap<(i64, JobKind), u32>,
    /// Jobs that existed when a status was last written.
    jobs_seen: BTreeSet<(i64, JobKind)>,
    /// Jobs that finished successfully, even if deleted since.
    succeeded_jobs: BTreeSet<(i64, JobKind)>,
    /// Jobs (by kind) that fail, in every revision.
    failing_jobs: BTreeSet<JobKind>,
    /// Jobs that fail in the revisions shipping a version.
    bad_jobs: BTreeSet<(String, JobKind)>,
    /// Revisions whose config ConfigMaps exist.
    configs: BTreeSet<i64>,
    /// Revisions whose backups were taken (and not pruned).
    backups_taken: BTreeSet<i64>,
    /// VolumeSnapshots by revision and claim: their age in ticks.
    snapshots: BTreeMap<(i64, String), u32>,
    /// Claims whose snapshots fail, in every revision.
    failing_snapshots: BTreeSet<String>,
    /// Versions whose snapshots fail.
    bad_snapshots: BTreeSet<String>,
    /// What the backup step's source lookup reports as missing.
    source_problems: Vec<String>,
    /// Revisions whose config was restored.
    config_restored: BTreeSet<i64>,
    /// Revisions whose volumes were restored.
    volumes_restored: BTreeSet<i64>,
    /// Effects performed, in order.
    effects: Vec<Effect>,
    trace: Vec<String>,
}

impl Sim {
    fn new(spec: ReleaseSpec) -> Self {
        Self::seeded(spec, 0x9E37_79B9_7F4A_7C15)
    }

    fn seeded(spec: ReleaseSpec, seed: u64) -> Self {
        Self {
            now: Timestamp::from_second(1_700_000_000).unwrap_or_else(|e| panic!("{e}")),
            generation: 1,
            spec,
            status: ReleaseStatus::default(),
            blue: None,
            green: None,
            traffic: ServiceState::Selects(None),
            traffic_saved: None,
            preview: ServiceState::Selects(None),
            records: BTreeMap::new(),
            requests: Requests::default(),
            bad: BTreeSet::new(),
            rng: seed | 1,
            hashes: BTreeMap::new(),
            undo_scaled: BTreeSet::new(),
            glitch: false,
            jobs: BTreeMap::new(),
            job_ticks: 2,
            job_creations: BTreeMap::new(),
            jobs_seen: BTreeSet::new(),
            succeeded_jobs: BTreeSet::new(),
            failing_jobs: BTreeSet::new(),
            bad_jobs: BTreeSet::new(),
            configs: BTreeSet::new(),
            backups_taken: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            failing_snapshots: BTreeSet::new(),
            bad_snapshots: BTreeSet::new(),
            source_problems: Vec::new(),
            config_restored: BTreeSet::new(),
            volumes_restored: BTreeSet::new(),
            effects: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// A Release whose first revision has reached Ready.
    fn ready(spec: ReleaseSpec) -> Self {
        let mut sim = Self::new(spec);
        sim.run(60);
        assert_eq!(sim.status.phase, Some(Phase::Ready), "{}", sim.dump());
        sim
    }

    fn random(&mut self, below: u32) -> u32 {
        // xorshift64*: deterministic per seed, good enough for delays.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
        u32::try_from(x % u64::from(below.max(1))).unwrap_or(0)
    }

    fn hash(&self) -> String {
        hash_of(&self.spec)
    }

    fn blue_green(&self) -> bool {
        self.spec.strategy.blue_green.is_some()
    }

    fn auto_cutover(&self) -> bool {
        self.spec
            .strategy
            .blue_green
            .as_ref()
            .is_none_or(|b| b.auto_cutover)
    }

    fn automatic_rollback(&self) -> bool {
        self.spec
            .rollback
            .as_ref()
            .and_then(|r| r.automatic)
            .unwrap_or(true)
    }

    fn scale_down_delay(&self) -> SignedDuration {
        let delay = self
            .spec
            .strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.scale_down_delay)
            .map_or(DEFAULT_SCALE_DOWN_DELAY, Into::into);
        SignedDuration::try_from(delay).unwrap_or_else(|e| panic!("{e}"))
    }

    fn traffic_name(&self) -> Option<String> {
        match &self.spec.strategy.blue_green {
            Some(bg) => Some(bg.active_service.clone()),
            None => self
                .spec
                .strategy
                .recreate
                .as_ref()
                .and_then(|r| r.service.clone()),
        }
    }

    fn preview_name(&self) -> Option<String> {
        self.spec
            .strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.preview_service.clone())
    }

    fn dep(&self, color: Color) -> Option<&Dep> {
        match color {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }

    fn slot(&mut self, color: Color) -> &mut Option<Dep> {
        match color {
            Color::Blue => &mut self.blue,
            Color::Green => &mut self.green,
        }
    }

    fn pods(&self, color: Color) -> u32 {
        self.dep(color).map_or(0, |d| d.pods)
    }

    /// The condition reason a start is blocked with, if the traffic Service
    /// cannot be steered.
    fn traffic_problem(&self) -> Option<&'static str> {
        self.traffic_name()?;
        match self.traffic {
            ServiceState::Missing => Some("ServiceMissing"),
            ServiceState::Unsteerable(_) => Some("ServiceUnsteerable"),
            ServiceState::Selects(_) => None,
        }
    }

    /// What `observe::world` and `observe::requests` would report.
    fn observed(&self) -> Observed<'_> {
        let st = &self.status;
        let pods = match (st.phase, st.target_color) {
            (Some(Phase::Stopping), Some(target)) => {
                Some((target.other(), self.pods(target.other())))
            }
            _ => None,
        };
        let stable_record = st.phase == Some(Phase::RollingBack)
            && st
                .stable_revision
                .is_some_and(|r| self.records.contains_key(&r));
        Observed {
            now: self.now,
            name: "shop",
            generation: self.generation,
            spec: &self.spec,
            hash: self.hash(),
            status: st,
            world: crate::runbook::World {
                blue: self.blue.as_ref().map(Dep::state),
                green: self.green.as_ref().map(Dep::state),
                traffic_service: self.traffic_name().map(|_| self.traffic.clone()),
                preview_service: self.preview_name().map(|_| self.preview.clone()),
                pods,
                stable_record,
                jobs: self.job_states(),
                backup_sources: self.backup_sources(),
                snapshots: self.snapshot_states(),
                config_written: self.config_written(),
                // As `observe` reads it: only while rolling back.
                record: (st.phase == Some(Phase::RollingBack))
                    .then(|| st.revision.and_then(|r| self.records.get(&r)))
                    .flatten()
                    .map(|r| Shipped::of(&r.spec)),
            },
            requests: self.requests.clone(),
            frozen: None,
            gates: Default::default(),
            template_hash: String::new(),
        }
    }

    /// Whether `step` of the recorded revision is open (pending or
    /// running), which is when `observe` looks up what it needs.
    fn open(&self, step: Step) -> bool {
        matches!(
            step_state(&self.status, step),
            Some(StepState::Pending | StepState::Running)
        )
    }

    /// What `observe::job_kinds` lists for the current spec.
    fn job_kinds(&self) -> Vec<JobKind> {
        let mut kinds = vec![
            JobKind::ConfigCheck,
            JobKind::Migration,
            JobKind::MigrationVerify,
            JobKind::MigrationRollback,
        ];
        for job in self.spec.backup.iter().flat_map(|b| b.jobs.iter()) {
            kinds.push(JobKind::Backup(job.name.clone()));
            kinds.push(JobKind::Restore(job.name.clone()));
        }
        kinds
    }

    /// Whether Job `kind` of `revision` fails once it has run.
    fn job_fails(&self, revision: i64, kind: &JobKind) -> bool {
        self.failing_jobs.contains(kind)
            || self.records.get(&revision).is_some_and(|r| {
                self.bad_jobs
                    .contains(&(r.spec.version.clone(), kind.clone()))
            })
    }

    /// Where Job `kind` of `revision` is, if it exists: running for
    /// `job_ticks` ticks, then done.
    fn job_state(&self, revision: i64, kind: &JobKind) -> Option<JobState> {
        let age = *self.jobs.get(&(revision, kind.clone()))?;
        Some(if age < self.job_ticks {
            JobState::Running
        } else if self.job_fails(revision, kind) {
            JobState::Failed("exit 1".into())
        } else {
            JobState::Succeeded
        })
    }

    fn job_succeeded(&self, revision: i64, kind: &JobKind) -> bool {
        self.succeeded_jobs.contains(&(revision, kind.clone()))
    }

    fn job_created(&self, revision: i64, kind: &JobKind) -> u32 {
        self.job_creations
            .get(&(revision, kind.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// The current revision's Jobs, looked up while a step that runs Jobs
    /// is open, as `observe` does.
    fn job_states(&self) -> BTreeMap<JobKind, JobState> {
        let Some(revision) = self.status.revision else {
            return BTreeMap::new();
        };
        let steps = [
            Step::Backup,
            Step::Config,
            Step::Migrate,
            Step::RollBackMigration,
            Step::RestoreData,
        ];
        if !steps.iter().any(|s| self.open(*s)) {
            return BTreeMap::new();
        }
        self.job_kinds()
            .into_iter()
            .filter_map(|kind| self.job_state(revision, &kind).map(|state| (kind, state)))
            .collect()
    }

    /// Whether the recorded revision's backups are recorded in the status.
    fn backed_up(&self) -> bool {
        let revision = self.status.revision;
        self.status
            .backups
            .iter()
            .any(|b| Some(b.revision) == revision)
    }

    /// The backup sources, looked up while the backup step is open and has
    /// not recorded its backups.
    fn backup_sources(&self) -> Option<crate::runbook::BackupSources> {
        (self.status.revision.is_some()
            && self.spec.backup.is_some()
            && self.open(Step::Backup)
            && !self.backed_up())
        .then(|| crate::runbook::BackupSources {
            problems: self.source_problems.clone(),
        })
    }

    /// Whether the snapshots of `revision` fail.
    fn snapshot_fails(&self, revision: i64, claim: &str) -> bool {
        self.failing_snapshots.contains(claim)
            || self
                .records
                .get(&revision)
                .is_some_and(|r| self.bad_snapshots.contains(&r.spec.version))
    }

    /// The current revision's VolumeSnapshots, looked up while the backup
    /// step is open and has recorded its backups: pending for a tick, then
    /// ready (or failed).
    fn snapshot_states(&self) -> BTreeMap<String, SnapshotState> {
        let Some(revision) = self.status.revision else {
            return BTreeMap::new();
        };
        let volumes = self
            .spec
            .backup
            .as_ref()
            .is_some_and(|b| !b.volumes.is_empty());
        if !volumes || !self.open(Step::Backup) || !self.backed_up() {
            return BTreeMap::new();
        }
        self.snapshots
            .iter()
            .filter(|((r, _), _)| *r == revision)
            .map(|((_, claim), age)| {
                let state = if *age < 2 {
                    SnapshotState::Pending
                } else if self.snapshot_fails(revision, claim) {
                    SnapshotState::Failed("the CSI driver refused the snapshot".into())
                } else {
                    SnapshotState::Ready
                };
                (claim.clone(), state)
            })
            .collect()
    }

    /// Whether the current revision's config ConfigMaps exist, looked up
    /// while the config step is open.
    fn config_written(&self) -> bool {
        let listed = self
            .spec
            .config
            .as_ref()
            .is_some_and(|c| !c.config_maps.is_empty());
        listed
            && self.open(Step::Config)
            && self
                .status
                .revision
                .is_some_and(|r| self.configs.contains(&r))
    }

    /// The current revision's Jobs are deleted (by a person, or a sweep of
    /// the namespace) — those a status write has followed: a Job created
    /// and deleted between two status writes, the first lost, leaves nothing
    /// a planner could read, and only a finalizer would prevent that.
    fn delete_jobs(&mut self) {
        let revision = self.status.revision.unwrap_or_default();
        let seen = &self.jobs_seen;
        self.jobs
            .retain(|key, _| key.0 != revision || !seen.contains(key));
    }

    // ---- the controller loop ----

    /// One reconcile: the world moves on, then observe, plan, act, record.
    fn reconcile(&mut self, crash: Crash) -> Plan {
        for d in [&mut self.blue, &mut self.green].into_iter().flatten() {
            d.tick();
        }
        let ticks = self.job_ticks;
        let mut finished = Vec::new();
        for (key, age) in &mut self.jobs {
            *age += 1;
            if *age >= ticks {
                finished.push(key.clone());
            }
        }
        for (revision, kind) in finished {
            if !self.job_fails(revision, &kind) {
                self.succeeded_jobs.insert((revision, kind));
            }
        }
        for age in self.snapshots.values_mut() {
            *age += 1;
        }
        let mut plan = plan(&self.observed());
        self.trace.push(format!(
            "{crash:?} @{}: {:?} r{:?} -> {:?} r{:?} effect {:?}",
            self.now.as_second() % 100_000,
            self.status.phase,
            self.status.revision,
            plan.status.phase,
            plan.status.revision,
            plan.effect
        ));
        self.check_plan(&plan);
        if crash == Crash::BeforeEffect {
            return plan;
        }
        if let Some(effect) = plan.effect.clone() {
            self.check_effect(&effect, &plan.status);
            match self.perform(&effect, &plan.status) {
                Ok(Some((color, generation))) => {
                    plan.status
                        .applied_generations
                        .insert(color.as_str().to_owned(), generation);
                }
                Ok(None) => {}
                Err(why) => {
                    // The controller backs off and retries; nothing is written.
                    self.trace.push(format!("  effect failed: {why}"));
                    return plan;
                }
            }
            self.effects.push(effect);
        }
        if crash == Crash::AfterEffect {
            return plan;
        }
        self.check_write(&plan.status);
        self.status = plan.status.clone();
        self.jobs_seen.extend(self.jobs.keys().cloned());
        plan
    }

    fn step(&mut self) -> Plan {
        self.reconcile(Crash::No)
    }

    /// Reconciles, a second apart, until the current spec's revision is
    /// terminal and nothing is left to do; returns the effects performed.
    fn run(&mut self, max: usize) -> Vec<Effect> {
        let from = self.effects.len();
        for _ in 0..max {
            let plan = self.step();
            self.now += secs(1);
            if plan.effect.is_none() && self.settled() {
                return self.effects[from..].to_vec();
            }
        }
        panic!("no terminal phase after {max} reconciles\n{}", self.dump())
    }

    /// Reconciles until `done` holds; returns the effects performed.
    fn run_until(&mut self, max: usize, done: impl Fn(&Sim) -> bool) -> Vec<Effect> {
        let from = self.effects.len();
        for _ in 0..max {
            if done(self) {
                return self.effects[from..].to_vec();
            }
            self.step();
            self.now += secs(1);
        }
        panic!(
            "condition not reached after {max} reconciles\n{}",
            self.dump()
        )
    }

    fn settled(&self) -> bool {
        self.status.phase.is_some_and(Phase::is_terminal)
            && self.status.revision_hash.as_deref() == Some(self.hash().as_str())
    }

    /// Changes the spec, as `kubectl apply` would.
    fn edit(&mut self, change: impl FnOnce(&mut ReleaseSpec)) {
        change(&mut self.spec);
        self.generation += 1;
        self.trace.push(format!(
            "edit: generation {} hash {}",
            self.generation,
            self.hash()
        ));
    }

    fn ship(&mut self, version: &str) {
        self.edit(|s| s.version = version.to_owned());
    }

    /// Performs an effect the way `execute` and the API server would;
    /// returns the Deployment generation the controller records.
    fn perform(
        &mut self,
        effect: &Effect,
        out: &ReleaseStatus,
    ) -> Result<Option<(Color, i64)>, String> {
        match effect {
            Effect::RecordRevision { revision } => {
                let record = Record {
                    hash: self.hash(),
                    replicas: self.spec.workload.replicas,
                    spec: self.spec.clone(),
                };
                self.records.insert(*revision, record);
                Ok(None)
            }
            Effect::ApplyDeployment { color, revision } => {
                let (hash, replicas) = (self.hash(), self.spec.workload.replicas);
                Ok(Some(self.roll_out(*color, *revision, hash, replicas)))
            }
            Effect::RestoreDeployment { color, revision } => {
                let record = self
                    .records
                    .get(revision)
                    .cloned()
                    .ok_or_else(|| format!("no record of revision {revision}"))?;
                Ok(Some(self.roll_out(
                    *color,
                    *revision,
                    record.hash,
                    record.replicas,
                )))
            }
            Effect::Scale { color, replicas } => {
                let rollback = undoing(out);
                let revision = out.revision.unwrap_or_default();
                let d = self
                    .slot(*color)
                    .as_mut()
                    .ok_or_else(|| format!("no {} Deployment to scale", color.as_str()))?;
                if d.desired != *replicas {
                    d.desired = *replicas;
                    d.generation += 1;
                    d.age = 0;
                    d.available = d.available.min(*replicas);
                }
                let generation = d.generation;
                if rollback {
                    self.undo_scaled.insert(revision);
                }
                Ok(Some((*color, generation)))
            }
            Effect::TakeBackups { revision } => {
                self.backups_taken.insert(*revision);
                let claims: Vec<String> = self
                    .spec
                    .backup
                    .iter()
                    .flat_map(|b| b.volumes.iter())
                    .map(|v| v.persistent_volume_claim.clone())
                    .collect();
                for claim in claims {
                    self.snapshots.entry((*revision, claim)).or_insert(0);
                }
                Ok(None)
            }
            Effect::WriteConfig { revision } => {
                self.configs.insert(*revision);
                Ok(None)
            }
            Effect::RunJob { kind, revision } => {
                // `execute` renders forward Jobs from the current spec and
                // undo Jobs from the revision's record, and refuses a Job
                // that is not declared there.
                if !self.declares(kind, *revision) {
                    return Err(format!("refused: revision {revision} declares no {kind:?}"));
                }
                // Create-if-absent: the API server refuses a second Job of
                // the same name. 20. A migration Job is created once per
                // revision, whatever crashes and deletions happen.
                let key = (*revision, kind.clone());
                if !self.jobs.contains_key(&key) {
                    self.jobs.insert(key.clone(), 0);
                    *self.job_creations.entry(key).or_default() += 1;
                }
                let created = self.job_created(*revision, kind);
                self.ensure(*kind != JobKind::Migration || created <= 1, || {
                    format!("the migration Job of revision {revision} was created {created} times")
                });
                Ok(None)
            }
            Effect::RestoreConfig { revision } => {
                self.config_restored.insert(*revision);
                Ok(None)
            }
            Effect::RestoreVolumes {
                revision,
                color,
                stable,
            } => {
                if !self.backups_taken.contains(revision) {
                    return Err(format!("no VolumeSnapshots of revision {revision}"));
                }
                let record = self
                    .records
                    .get(stable)
                    .cloned()
                    .ok_or_else(|| format!("no record of revision {stable}"))?;
                self.roll_out(*color, *stable, record.hash, record.replicas);
                // The template now mounts the restored claims: a new rollout
                // even where it ran `stable` already.
                let (observe_after, ready_after) = (self.random(2), self.random(4));
                let d = self
                    .slot(*color)
                    .as_mut()
                    .ok_or_else(|| format!("no {} Deployment", color.as_str()))?;
                d.generation += 1;
                d.age = 0;
                d.available = 0;
                d.observe_after = observe_after;
                d.ready_after = ready_after;
                let generation = d.generation;
                self.volumes_restored.insert(*revision);
                Ok(Some((*color, generation)))
            }
            Effect::Prune { keep } => {
                self.configs.retain(|r| keep.contains(r));
                self.backups_taken.retain(|r| keep.contains(r));
                self.snapshots.retain(|(r, _), _| keep.contains(r));
                Ok(None)
            }
            Effect::PointService { service, color } => {
                let svc = if Some(service) == self.traffic_name().as_ref() {
                    &mut self.traffic
                } else if Some(service) == self.preview_name().as_ref() {
                    &mut self.preview
                } else {
                    return Err(format!("no Service {service} is steered"));
                };
                match svc {
                    ServiceState::Selects(_) => *svc = ServiceState::Selects(Some(*color)),
                    other => return Err(format!("Service {service} is {other:?}")),
                }
                Ok(None)
            }
        }
    }

    /// Whether `execute` finds Job `kind` of `revision` declared: forward
    /// Jobs in the current spec, undo Jobs in the revision's record.
    fn declares(&self, kind: &JobKind, revision: i64) -> bool {
        let spec = &self.spec;
        let record = self.records.get(&revision).map(|r| &r.spec);
        match kind {
            JobKind::Backup(name) => spec
                .backup
                .iter()
                .flat_map(|b| b.jobs.iter())
                .any(|j| &j.name == name),
            JobKind::ConfigCheck => spec.config.as_ref().is_some_and(|c| c.check.is_some()),
            JobKind::Migration => spec.migration.is_some(),
            JobKind::MigrationVerify => spec.migration.as_ref().is_some_and(|m| m.verify.is_some()),
            JobKind::MigrationRollback => record
                .and_then(|s| s.migration.as_ref())
                .is_some_and(|m| m.rollback.is_some()),
            JobKind::Restore(name) => record.and_then(|s| s.backup.as_ref()).is_some_and(|b| {
                b.jobs
                    .iter()
                    .any(|j| &j.name == name && j.restore.is_some())
            }),
        }
    }

    fn roll_out(
        &mut self,
        color: Color,
        revision: i64,
        hash: String,
        replicas: i32,
    ) -> (Color, i64) {
        let never_ready = self.bad.contains(&hash);
        let (observe_after, ready_after) = (self.random(2), self.random(4));
        let slot = self.slot(color);
        match slot {
            // Server-side apply of identical content changes nothing.
            Some(d) if d.revision == revision && d.hash == hash && d.desired == replicas => {
                (color, d.generation)
            }
            Some(d) => {
                if d.revision != revision || d.hash != hash {
                    d.available = 0;
                }
                d.available = d.available.min(replicas);
                d.revision = revision;
                d.hash = hash;
                d.desired = replicas;
                d.generation += 1;
                d.age = 0;
                d.observe_after = observe_after;
                d.ready_after = ready_after;
                d.never_ready = never_ready;
                d.deadline_exceeded = false;
                (color, d.generation)
            }
            None => {
                *slot = Some(Dep {
                    revision,
                    hash,
                    desired: replicas,
                    available: 0,
                    pods: 0,
                    generation: 1,
                    observed_generation: 0,
                    age: 0,
                    observe_after,
                    ready_after,
                    never_ready,
                    deadline_exceeded: false,
                });
                (color, 1)
            }
        }
    }

    fn service_gone(&mut self) {
        if self.traffic != ServiceState::Missing {
            self.traffic_saved = Some(self.traffic.clone());
            self.traffic = ServiceState::Missing;
            self.glitch = true;
            // Someone else moves traffic (here and when the Service comes
            // back): steering it again after the undo scale-down is then
            // no longer out of order.
            self.undo_scaled.clear();
        }
    }

    fn service_back(&mut self) {
        if let Some(saved) = self.traffic_saved.take() {
            self.traffic = saved;
            self.undo_scaled.clear();
        }
    }

    // ---- the invariants ----

    fn dump(&self) -> String {
        let from = self.trace.len().saturating_sub(40);
        format!(
            "--- last reconciles ---\n{}\n--- status ---\n{:#?}\n--- world ---\nblue {:?}\ngreen {:?}\ntraffic {:?} preview {:?} requests {:?}\njobs {:?}\ncreated {:?}\nbackups taken {:?} configs {:?} sources {:?}",
            self.trace[from..].join("\n"),
            brief(&self.status),
            self.blue,
            self.green,
            self.traffic,
            self.preview,
            self.requests,
            self.jobs,
            self.job_creations,
            self.backups_taken,
            self.configs,
            self.source_problems
        )
    }

    #[track_caller]
    fn ensure(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            panic!("invariant broken: {}\n{}", what(), self.dump());
        }
    }

    /// Whether the active Deployment differs from what the status says was
    /// applied, which Ready repairs.
    fn drifted(&self, color: Color) -> bool {
        let applied = self.status.applied_generations.get(color.as_str());
        match self.dep(color) {
            None => true,
            Some(d) => applied.is_some_and(|g| *g != d.generation),
        }
    }

    /// Whether a run changed something that must be undone, as the planner
    /// can know it: a world-changing step recorded, or (a recording lost)
    /// the revision's migration Job in sight.
    fn changed(&self, steps: &[StepStatus]) -> bool {
        steps::anything_changed(steps)
            || self.observed().world.jobs.contains_key(&JobKind::Migration)
    }

    /// Checks a plan against the status it was made from and the world it
    /// was made in.
    fn check_plan(&self, plan: &Plan) {
        let (input, out) = (&self.status, &plan.status);
        let hash = self.hash();
        let new_spec =
            input.revision.is_none() || input.revision_hash.as_deref() != Some(hash.as_str());
        let retry = matches!(input.phase, Some(Phase::RolledBack | Phase::Failed))
            && self.requests.retry.is_some()
            && self.requests.retry == input.revision;
        let start_due = match input.phase {
            None => true,
            Some(p) if p.is_terminal() => new_spec || retry,
            Some(Phase::RollingBack) => false,
            Some(_) => new_spec && !self.changed(&input.steps),
        };
        let problem = self.traffic_problem();
        let blocked = start_due && problem.is_some();
        let revision = input.revision.unwrap_or(0);
        let effect = plan.effect.as_ref();

        // 6. kstatus conditions.
        for c in &out.conditions {
            self.ensure(c.observed_generation == Some(self.generation), || {
                format!(
                    "condition {} has observedGeneration {:?}",
                    c.type_, c.observed_generation
                )
            });
        }
        let ready = conditions::is_true(&out.conditions, conditions::READY);
        let stalled = conditions::is_true(&out.conditions, conditions::STALLED);
        let reconciling = conditions::is_true(&out.conditions, conditions::RECONCILING);
        let failed = matches!(out.phase, Some(Phase::RolledBack | Phase::Failed));
        self.ensure(
            ready == (out.phase == Some(Phase::Ready) && !blocked),
            || {
                format!(
                    "Ready={ready} in phase {:?} (blocked: {blocked})",
                    out.phase
                )
            },
        );
        self.ensure(stalled == (blocked || failed), || {
            format!(
                "Stalled={stalled} in phase {:?} (blocked: {blocked})",
                out.phase
            )
        });
        self.ensure(reconciling == (!ready && !stalled), || {
            format!("Reconciling={reconciling} with Ready={ready} Stalled={stalled}")
        });

        // 8. A start the traffic Service cannot take is blocked; 2. any other
        // start records the next revision number with the spec's hash.
        if blocked {
            self.ensure(effect.is_none(), || {
                format!("blocked start acts: {effect:?}")
            });
            self.ensure(out.revision == input.revision, || {
                "blocked start took a revision number".into()
            });
            self.ensure(stalled_reason(out).as_deref() == problem, || {
                format!(
                    "blocked start: Stalled reason {:?}, expected {problem:?}",
                    stalled_reason(out)
                )
            });
            let phase = match input.phase {
                Some(p) if !p.is_terminal() => Some(Phase::Failed),
                p => p,
            };
            self.ensure(out.phase == phase, || {
                format!("blocked start left phase {:?}", out.phase)
            });
        } else if start_due {
            let next = revision + 1;
            self.ensure(
                effect == Some(&Effect::RecordRevision { revision: next }),
                || format!("a start should record revision {next}, not {effect:?}"),
            );
            self.ensure(
                out.revision == Some(next) && out.revision_hash.as_deref() == Some(hash.as_str()),
                || {
                    format!(
                        "a start wrote revision {:?} hash {:?}",
                        out.revision, out.revision_hash
                    )
                },
            );
            self.ensure(out.phase == Some(Phase::Pending), || {
                format!("a start in phase {:?}", out.phase)
            });
        } else {
            self.ensure(
                !matches!(effect, Some(Effect::RecordRevision { .. })),
                || format!("{effect:?} without a start"),
            );
            self.ensure(
                out.revision == input.revision && out.revision_hash == input.revision_hash,
                || "the revision changed without a start".into(),
            );
        }

        // 19. A Ready revision that has nothing left to do has ended its run:
        // every step finished, the revision stable and in the history.
        if out.phase == Some(Phase::Ready) && effect.is_none() {
            let open = steps::current(&out.steps).map(|(_, step)| step);
            let recorded = out
                .history
                .iter()
                .any(|h| Some(h.revision) == out.revision && h.result == Phase::Ready);
            self.ensure(
                open.is_none() && out.stable_revision == out.revision && recorded,
                || {
                    format!(
                        "Ready with step {open:?} still open, stable revision {:?} of {:?}, in the history: {recorded}",
                        out.stable_revision, out.revision
                    )
                },
            );
        }
        // 4. A terminal revision stays terminal and does nothing forward.
        if let Some(terminal) = input.phase.filter(|p| p.is_terminal())
            && !start_due
        {
            self.ensure(out.phase == Some(terminal), || {
                format!(
                    "terminal {terminal:?} became {:?} without a spec change or retry",
                    out.phase
                )
            });
            let repair = |e: &Effect| match e {
                Effect::ApplyDeployment { color, revision: r } => {
                    terminal == Phase::Ready
                        && input.active_color == Some(*color)
                        && Some(*r) == input.revision
                        && self.drifted(*color)
                }
                _ => false,
            };
            self.ensure(effect.is_none_or(repair), || {
                format!("terminal {terminal:?} acts: {effect:?}")
            });
        }

        // 10. A newer spec mid-run: end the run if nothing changed, else undo it.
        if new_spec
            && let Some(p) = input.phase
            && !p.is_terminal()
            && p != Phase::RollingBack
        {
            if self.changed(&input.steps) {
                let ok = match out.phase {
                    Some(Phase::RollingBack | Phase::RolledBack) => self.automatic_rollback(),
                    Some(Phase::Failed) => !self.automatic_rollback(),
                    _ => false,
                };
                self.ensure(ok && out.revision == input.revision, || {
                    format!(
                        "superseded after a change went to {:?} r{:?}",
                        out.phase, out.revision
                    )
                });
                self.ensure(
                    out.failure
                        .as_deref()
                        .is_some_and(|f| f.contains("superseded")),
                    || format!("superseded run's failure: {:?}", out.failure),
                );
            } else {
                let ended = out.history.iter().find(|h| h.revision == revision);
                self.ensure(ended.is_some_and(|h| h.result == Phase::Failed), || {
                    format!("superseded run before a change was not ended as Failed: {ended:?}")
                });
            }
        }

        // 3. After a failure that followed a change, only undo effects, traffic
        // first.
        if input.phase == Some(Phase::RollingBack) {
            self.ensure(
                matches!(out.phase, Some(Phase::RollingBack | Phase::RolledBack))
                    && out.revision == input.revision
                    && undoing(out),
                || format!("a rollback went to {:?} r{:?}", out.phase, out.revision),
            );
        }
        if out.failure.is_some() && out.phase.is_some_and(|p| !p.is_terminal()) {
            self.ensure(undoing(out), || {
                "a failed revision runs on without undoing".into()
            });
        }
        match out.phase {
            Some(Phase::Failed) => self.ensure(
                !self.automatic_rollback() || !self.changed(&out.steps),
                || {
                    "Failed although the revision changed something and rollback is automatic"
                        .into()
                },
            ),
            Some(Phase::Ready) => self.ensure(out.failure.is_none() && !undoing(out), || {
                format!("Ready after a failure: {:?}", out.failure)
            }),
            _ => {}
        }
    }

    /// Checks an effect just before it is performed.
    fn check_effect(&self, effect: &Effect, out: &ReleaseStatus) {
        let target = out.target_color.unwrap_or(Color::Blue);
        let old = target.other();
        let rev = out.revision.unwrap_or_default();
        let old_stopped = self.dep(old).is_none_or(|d| d.desired == 0) && self.pods(old) == 0;
        let target_up = self
            .dep(target)
            .is_some_and(|d| d.state().is_available(self.spec.workload.replicas));
        let done = |s: Step| {
            matches!(
                step_state(out, s),
                Some(StepState::Succeeded | StepState::Skipped)
            )
        };
        if undoing(out) {
            let traffic_undone = finished(step_state(out, Step::RollBackTraffic));
            let scaled = self.undo_scaled.contains(&rev)
                || step_state(out, Step::ScaleDownNew) != Some(StepState::Pending);
            self.check_data_undo(effect, out);
            let ok = match effect {
                Effect::PointService { service, color } => {
                    Some(service) == self.traffic_name().as_ref() && *color == old && !scaled
                }
                Effect::RestoreDeployment { color, revision } => {
                    *color == old
                        && Some(*revision) == out.stable_revision
                        && self.records.get(revision).map(|r| &r.hash) == self.hashes.get(revision)
                        && !scaled
                }
                Effect::Scale { color, replicas } => {
                    *color == target && *replicas == 0 && traffic_undone
                }
                // Schema, config and data are undone after traffic.
                Effect::RunJob { kind, .. } => {
                    traffic_undone
                        && matches!(kind, JobKind::MigrationRollback | JobKind::Restore(_))
                }
                Effect::RestoreConfig { .. } | Effect::RestoreVolumes { .. } => traffic_undone,
                _ => false,
            };
            self.ensure(ok, || {
                format!("{effect:?} while rolling back revision {rev}")
            });
            return;
        }
        let ok = match effect {
            Effect::RecordRevision { revision } => Some(*revision) == out.revision,
            Effect::ApplyDeployment { color, revision } => {
                let content = Some(*revision) == out.revision
                    && out.revision_hash.as_deref() == Some(self.hash().as_str());
                let forward = out.phase == Some(Phase::Deploying)
                    && *color == target
                    // 7. Recreate stops the old version before the new one starts.
                    && (self.blue_green() || old_stopped);
                let repair = out.phase == Some(Phase::Ready) && out.active_color == Some(*color);
                // 12. Nothing of a revision is deployed before its
                // migration (and verification) succeeded or was skipped.
                let migrated = done(Step::Backup)
                    && done(Step::Config)
                    && done(Step::Migrate)
                    && self.migrated(*revision);
                self.ensure(migrated, || {
                    format!(
                        "{effect:?} before the migration of revision {revision} succeeded (Migrate {:?})",
                        step_state(out, Step::Migrate)
                    )
                });
                content && (forward || repair)
            }
            Effect::RestoreDeployment { .. }
            | Effect::RestoreConfig { .. }
            | Effect::RestoreVolumes { .. } => false,
            // 11. Backup, then config, then the migration, each only once
            // what comes before it is done.
            Effect::TakeBackups { revision } => {
                Some(*revision) == out.revision
                    && out.phase == Some(Phase::BackingUp)
                    && done(Step::Preflight)
                    // 16. Missing sources stop the backup before it starts.
                    && self.source_problems.is_empty()
            }
            // Config is written and checked while the old version still
            // serves (Recreate stops it afterwards).
            Effect::WriteConfig { revision } => {
                Some(*revision) == out.revision
                    && out.phase == Some(Phase::Migrating)
                    && done(Step::Backup)
            }
            Effect::RunJob { kind, revision } => {
                let config = self.spec.config.as_ref();
                let maps = config.is_some_and(|c| !c.config_maps.is_empty());
                let check = config.is_some_and(|c| c.check.is_some());
                Some(*revision) == out.revision
                    && match kind {
                        JobKind::Backup(_) => {
                            out.phase == Some(Phase::BackingUp)
                                && self.backups_taken.contains(revision)
                        }
                        JobKind::ConfigCheck => {
                            out.phase == Some(Phase::Migrating)
                                && done(Step::Backup)
                                && (!maps || self.configs.contains(revision))
                        }
                        JobKind::Migration => {
                            out.phase == Some(Phase::Migrating)
                                && done(Step::Backup)
                                && done(Step::Config)
                                && (!check || self.job_succeeded(rev, &JobKind::ConfigCheck))
                        }
                        JobKind::MigrationVerify => {
                            out.phase == Some(Phase::Migrating)
                                && self.job_succeeded(rev, &JobKind::Migration)
                        }
                        JobKind::MigrationRollback | JobKind::Restore(_) => false,
                    }
            }
            // 15. Retention keeps the last `keep` revisions, this one
            // included, once every step before Complete is done.
            Effect::Prune { keep } => {
                let mut keep = keep.clone();
                keep.sort_unstable();
                let complete = step_state(out, Step::Complete);
                keep == self.retained(rev)
                    && matches!(complete, Some(StepState::Running | StepState::Succeeded))
                    && out.steps.iter().all(|s| {
                        s.name == Step::Complete.name()
                            || matches!(s.state, StepState::Succeeded | StepState::Skipped)
                    })
            }
            Effect::Scale { color, replicas } => {
                *replicas == 0
                    && *color == old
                    && match out.phase {
                        Some(Phase::Stopping) => !self.blue_green(),
                        Some(Phase::Observing) => {
                            let cut = steps::finished_at(&out.steps, Step::CutOver);
                            self.blue_green()
                                && step_state(out, Step::CutOver) == Some(StepState::Succeeded)
                                && cut.is_some_and(|c| self.now >= c + self.scale_down_delay())
                        }
                        _ => false,
                    }
            }
            Effect::PointService { service, color } => {
                let traffic = Some(service) == self.traffic_name().as_ref();
                let preview = Some(service) == self.preview_name().as_ref();
                let promoted = self.auto_cutover() || self.requests.promote == out.revision;
                *color == target
                    && if self.blue_green() && traffic {
                        // 1. and 9. Cut over only after verification, and
                        // only once promoted when autoCutover is off.
                        out.phase == Some(Phase::CuttingOver)
                            && step_state(out, Step::Verify) == Some(StepState::Succeeded)
                            && promoted
                    } else {
                        (traffic || preview)
                            && out.phase == Some(Phase::Deploying)
                            && target_up
                            && (self.blue_green() || old_stopped)
                    }
            }
        };
        self.ensure(ok, || {
            format!("{effect:?} in phase {:?} of revision {rev}", out.phase)
        });
    }

    /// The rollback policy of the current spec, as the planner reads it.
    fn policy(&self) -> crate::api::RollbackPolicy {
        self.spec.rollback.clone().unwrap_or_default()
    }

    /// The revisions whose backups and config a Ready `revision` keeps,
    /// ascending.
    fn retained(&self, revision: i64) -> Vec<i64> {
        let keep = self.spec.backup.as_ref().map_or(3, |b| b.keep.max(1));
        let oldest = revision - i64::from(keep) + 1;
        (oldest.max(1)..=revision).collect()
    }

    /// Whether the migration of `revision` (as the current spec declares
    /// it) and its verification succeeded in the world.
    fn migrated(&self, revision: i64) -> bool {
        self.spec.migration.as_ref().is_none_or(|m| {
            self.job_succeeded(revision, &JobKind::Migration)
                && (m.verify.is_none() || self.job_succeeded(revision, &JobKind::MigrationVerify))
        })
    }

    /// Whether the record of `revision` declares a down-migration.
    fn declares_down_migration(&self, revision: i64) -> bool {
        self.declares(&JobKind::MigrationRollback, revision)
    }

    /// Checks an effect that undoes schema, config or data.
    fn check_data_undo(&self, effect: &Effect, out: &ReleaseStatus) {
        let target = out.target_color.unwrap_or(Color::Blue);
        let rev = out.revision.unwrap_or_default();
        let traffic_undone = finished(step_state(out, Step::RollBackTraffic));
        let record = out.backups.iter().find(|b| b.revision == rev);
        match effect {
            Effect::RunJob {
                kind: JobKind::MigrationRollback,
                revision,
            } => {
                // 13. The down-migration runs after traffic is back, once the
                // migration stopped, and only for a revision that declares
                // one.
                let back = out.stable_revision.is_none()
                    || self.glitch
                    || self.traffic != ServiceState::Selects(Some(target));
                self.ensure(*revision == rev && traffic_undone && back, || {
                    format!(
                        "migration rollback of revision {revision} before traffic is back (RollBackTraffic {:?}, Service {:?})",
                        step_state(out, Step::RollBackTraffic),
                        self.traffic
                    )
                });
                self.ensure(
                    self.job_state(rev, &JobKind::Migration) != Some(JobState::Running),
                    || format!("migration rollback of revision {rev} while its migration runs"),
                );
                self.ensure(self.declares_down_migration(rev), || {
                    format!("migration rollback of revision {rev}, which declares none")
                });
                self.ensure(self.policy().run_migration_rollback != Some(false), || {
                    "migration rollback although rollback.runMigrationRollback is off".into()
                });
            }
            Effect::RunJob {
                kind: JobKind::Restore(name),
                revision,
            } => {
                let backed_up = self.job_succeeded(rev, &JobKind::Backup(name.clone()));
                self.ensure(
                    *revision == rev
                        && traffic_undone
                        && backed_up
                        && self.policy().restore_volumes == Some(true),
                    || {
                        format!(
                            "restore Job {name:?} of revision {revision} (backed up: {backed_up})"
                        )
                    },
                );
                self.ensure(self.declares(&JobKind::Restore(name.clone()), rev), || {
                    format!("restore Job {name:?} of revision {rev}, which declares none")
                });
            }
            Effect::RestoreConfig { revision } => {
                // 14. Config is put back only from backups that were taken.
                let copied =
                    record.is_some_and(|b| !b.config_maps.is_empty() || !b.secrets.is_empty());
                self.ensure(
                    *revision == rev
                        && self.backups_taken.contains(revision)
                        && copied
                        && self.policy().restore_config != Some(false),
                    || {
                        format!(
                            "RestoreConfig of revision {revision}, whose backups were not taken (taken: {:?})",
                            self.backups_taken
                        )
                    },
                );
            }
            Effect::RestoreVolumes {
                revision,
                color,
                stable,
            } => {
                let snapshots = record.is_some_and(|b| !b.volume_snapshots.is_empty());
                self.ensure(
                    *revision == rev
                        && self.backups_taken.contains(revision)
                        && snapshots
                        && *color == target.other()
                        && Some(*stable) == out.stable_revision
                        && self.policy().restore_volumes == Some(true),
                    || format!("{effect:?} (backups taken: {:?})", self.backups_taken),
                );
            }
            _ => {}
        }
    }

    /// Checks what a status about to be written says about backups, config
    /// and the migration against the world.
    fn check_data_write(&self, out: &ReleaseStatus) {
        let input = &self.status;
        let rev = out.revision.unwrap_or_default();
        let entered = |phase: Phase| {
            out.phase == Some(phase)
                && (input.phase != Some(phase) || input.revision != out.revision)
        };
        // 18. A revision that ends Failed without undoing anything never
        // started its migration.
        for h in &out.history {
            let new = !input
                .history
                .iter()
                .any(|i| i.revision == h.revision && i.result == h.result);
            let left = h
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("automatic rollback is off"));
            if new && h.result == Phase::Failed && !left {
                self.ensure(self.job_created(h.revision, &JobKind::Migration) == 0, || {
                    format!(
                        "revision {} ended Failed ({:?}) with nothing undone, but its migration Job was created",
                        h.revision, h.reason
                    )
                });
            }
        }
        // 17. Pods never run without their revision's config.
        for d in [&self.blue, &self.green].into_iter().flatten() {
            let listed = self
                .records
                .get(&d.revision)
                .and_then(|r| r.spec.config.as_ref())
                .is_some_and(|c| !c.config_maps.is_empty());
            self.ensure(
                d.desired == 0 || !listed || self.configs.contains(&d.revision),
                || {
                    format!(
                        "revision {} runs but its config ConfigMaps are gone",
                        d.revision
                    )
                },
            );
        }
        if entered(Phase::Ready) {
            if let Some(m) = &self.spec.migration {
                let once = self.job_created(rev, &JobKind::Migration) == 1;
                let verified =
                    m.verify.is_none() || self.job_succeeded(rev, &JobKind::MigrationVerify);
                self.ensure(
                    once && self.job_succeeded(rev, &JobKind::Migration) && verified,
                    || format!("Ready but revision {rev} did not migrate exactly once"),
                );
            }
            if let Some(c) = &self.spec.config {
                self.ensure(
                    c.config_maps.is_empty() || self.configs.contains(&rev),
                    || format!("Ready without the config of revision {rev}"),
                );
                self.ensure(
                    c.check.is_none() || self.job_succeeded(rev, &JobKind::ConfigCheck),
                    || format!("Ready without a passed config check of revision {rev}"),
                );
            }
            if let Some(b) = &self.spec.backup {
                let listed = !b.config_maps.is_empty()
                    || !b.secrets.is_empty()
                    || !b.volumes.is_empty()
                    || !b.jobs.is_empty();
                let jobs = b
                    .jobs
                    .iter()
                    .all(|j| self.job_succeeded(rev, &JobKind::Backup(j.name.clone())));
                let recorded = out.backups.iter().any(|r| r.revision == rev);
                self.ensure(
                    !listed || (self.backups_taken.contains(&rev) && jobs && recorded),
                    || format!("Ready without the backups of revision {rev}"),
                );
            }
            let kept = self.retained(rev);
            self.ensure(
                out.backups.iter().all(|b| kept.contains(&b.revision)),
                || {
                    let held: Vec<i64> = out.backups.iter().map(|b| b.revision).collect();
                    format!("Ready revision {rev} holds backups of {held:?}, keeps {kept:?}")
                },
            );
        }
        if entered(Phase::RolledBack) {
            let policy = self.policy();
            let ran = self.job_created(rev, &JobKind::Migration) > 0;
            let undo = step_state(out, Step::RollBackMigration);
            self.ensure(!ran || undo.is_some(), || {
                format!("revision {rev} migrated but its rollback has no RollBackMigration step")
            });
            if ran
                && self.declares_down_migration(rev)
                && policy.run_migration_rollback != Some(false)
            {
                let message = out
                    .steps
                    .iter()
                    .find(|s| s.name == Step::RollBackMigration.name())
                    .and_then(|s| s.message.clone());
                self.ensure(
                    matches!(undo, Some(StepState::Succeeded | StepState::Failed)),
                    || {
                        format!(
                            "revision {rev} declares a migration rollback, but RollBackMigration is {undo:?}: {message:?}"
                        )
                    },
                );
            }
            self.ensure(
                undo != Some(StepState::Succeeded)
                    || self.job_succeeded(rev, &JobKind::MigrationRollback),
                || format!("RollBackMigration of revision {rev} succeeded without its Job"),
            );
            if let Some(b) = out.backups.iter().find(|b| b.revision == rev) {
                let copies = !b.config_maps.is_empty() || !b.secrets.is_empty();
                // The policy may have changed since the step ran (a newer
                // spec arrived mid-rollback): the step says what it obeyed.
                let skipped_by_policy = out.steps.iter().any(|s| {
                    s.name == Step::RestoreConfig.name()
                        && s.state == StepState::Skipped
                        && s.message
                            .as_deref()
                            .is_some_and(|m| m.contains("rollback.restoreConfig is off"))
                });
                self.ensure(
                    !copies
                        || policy.restore_config == Some(false)
                        || skipped_by_policy
                        || self.config_restored.contains(&rev),
                    || {
                        format!(
                            "RolledBack without restoring the config copied before revision {rev}"
                        )
                    },
                );
                let volumes = !b.volume_snapshots.is_empty()
                    && policy.restore_volumes == Some(true)
                    && out.stable_revision.is_some();
                let claims = b.volume_snapshots.keys().all(|claim| {
                    out.restored_claims.get(claim)
                        == Some(&crate::runbook::render::restored_claim_name(claim, rev))
                });
                self.ensure(
                    !volumes || (self.volumes_restored.contains(&rev) && claims),
                    || {
                        format!(
                            "RolledBack without restoring the volumes of revision {rev}: {:?}",
                            out.restored_claims
                        )
                    },
                );
            }
        }
    }

    /// Checks a status about to be written against the one it replaces.
    fn check_write(&mut self, out: &ReleaseStatus) {
        self.check_data_write(out);
        let input = &self.status;
        // 2. Revision numbers only move forward, one at a time, and each
        // names one hash, the one its record holds.
        let (was, now) = (input.revision.unwrap_or(0), out.revision.unwrap_or(0));
        self.ensure(now == was || now == was + 1, || {
            format!("revision {was} -> {now}")
        });
        if let (Some(r), Some(h)) = (out.revision, out.revision_hash.clone()) {
            let known = self.hashes.get(&r);
            self.ensure(known.is_none_or(|k| *k == h), || {
                format!("revision {r} reused: {known:?} then {h}")
            });
            let record = self.records.get(&r).map(|x| x.hash.clone());
            self.ensure(record.as_ref() == Some(&h), || {
                format!("revision {r} written with hash {h}, its record holds {record:?}")
            });
        }
        // A step of a revision never runs again once finished, and keeps
        // its start time.
        if out.revision == input.revision {
            for (a, b) in input.steps.iter().zip(&out.steps) {
                let same = a.name == b.name
                    && (a.started_at.is_none() || a.started_at == b.started_at)
                    && (!finished(Some(a.state)) || a.state == b.state);
                self.ensure(same, || format!("step {} went from {a:?} to {b:?}", a.name));
            }
        }
        let entered = |phase: Phase| {
            out.phase == Some(phase)
                && (input.phase != Some(phase) || input.revision != out.revision)
        };
        let target = out.target_color.unwrap_or(Color::Blue);
        let old = target.other();
        let traffic = self.traffic_name().map(|_| &self.traffic);
        // 5. Ready: the target serves this revision, the Service selects it,
        // the old color is scaled to zero.
        if entered(Phase::Ready) {
            let d = self.dep(target);
            let serving = d.is_some_and(|d| {
                Some(d.revision) == out.revision
                    && Some(&d.hash) == out.revision_hash.as_ref()
                    && d.state().is_available(self.spec.workload.replicas)
            });
            self.ensure(serving && out.active_color == Some(target), || {
                format!(
                    "Ready but {} does not serve it (active {:?})",
                    target.as_str(),
                    out.active_color
                )
            });
            self.ensure(self.dep(old).is_none_or(|d| d.desired == 0), || {
                format!("Ready with {} still scaled up", old.as_str())
            });
            self.ensure(
                self.glitch || traffic.is_none_or(|t| *t == ServiceState::Selects(Some(target))),
                || format!("Ready but the Service is {traffic:?}"),
            );
        }
        // A rollback leaves the stable revision serving and the new color
        // scaled to zero.
        if entered(Phase::RolledBack) && !self.glitch {
            self.ensure(self.dep(target).is_none_or(|d| d.desired == 0), || {
                format!("RolledBack with {} still scaled up", target.as_str())
            });
            // Traffic and the new color are always undone; a data undo
            // fails only with a Job that failed or ran out of time.
            let rev = out.revision.unwrap_or_default();
            let undo_failed = out.steps.iter().find(|s| {
                s.state == StepState::Failed
                    && match Step::from_name(&s.name) {
                        Some(Step::RollBackMigration) => {
                            !self.job_fails(rev, &JobKind::MigrationRollback) && !timed_out(s)
                        }
                        Some(Step::RestoreData) => {
                            let restores = self.job_kinds().into_iter().filter(|k| {
                                matches!(k, JobKind::Restore(_)) && self.job_fails(rev, k)
                            });
                            restores.count() == 0 && !timed_out(s)
                        }
                        Some(step) => step.is_undo(),
                        None => false,
                    }
            });
            self.ensure(undo_failed.is_none(), || {
                format!("an undo step failed: {undo_failed:?}")
            });
            if let Some(stable) = out.stable_revision {
                let back = self
                    .dep(old)
                    .is_some_and(|d| d.revision == stable && d.desired > 0);
                self.ensure(back && out.active_color == Some(old), || {
                    format!(
                        "RolledBack but revision {stable} is not back on {}",
                        old.as_str()
                    )
                });
                self.ensure(
                    traffic.is_none_or(|t| *t == ServiceState::Selects(Some(old))),
                    || format!("RolledBack but the Service is {traffic:?}"),
                );
            }
        }
        if let (Some(r), Some(h)) = (out.revision, out.revision_hash.clone()) {
            self.hashes.insert(r, h);
        }
        if out.revision != self.status.revision {
            self.glitch = self.traffic == ServiceState::Missing;
        }
    }
}

/// Whether a step gave up on a Job that ran out of time.
fn timed_out(s: &StepStatus) -> bool {
    s.message
        .as_deref()
        .is_some_and(|m| m.contains("did not finish within"))
}

/// A status without timestamps and conditions' prose, for failure output.
fn brief(st: &ReleaseStatus) -> Value {
    let steps: Vec<String> = st
        .steps
        .iter()
        .map(|s: &StepStatus| {
            format!(
                "{} {:?}: {}",
                s.name,
                s.state,
                s.message.clone().unwrap_or_default()
            )
        })
        .collect();
    json!({
        "revision": st.revision, "hash": st.revision_hash, "phase": st.phase,
        "target": st.target_color, "active": st.active_color, "stable": st.stable_revision,
        "failure": st.failure, "steps": steps,
        "backups": st.backups.iter().map(|b| b.revision).collect::<Vec<_>>(),
        "restoredClaims": st.restored_claims,
        "conditions": st.conditions.iter().map(|c| format!("{}={} {}", c.type_, c.status, c.reason)).collect::<Vec<_>>(),
        "history": st.history.iter().map(|h| format!("r{} {:?}", h.revision, h.result)).collect::<Vec<_>>(),
    })
}

// ---- examples ----

/// A Job template running `command`.
fn job(command: &str) -> Value {
    json!({"template": {"spec": {"containers": [{"name": command, "command": [command]}]}}})
}

use Color::{Blue, Green};

fn point(color: Color) -> Effect {
    Effect::PointService {
        service: ACTIVE.into(),
        color,
    }
}

fn apply(color: Color, revision: i64) -> Effect {
    Effect::ApplyDeployment { color, revision }
}

fn scale_to_zero(color: Color) -> Effect {
    Effect::Scale { color, replicas: 0 }
}

fn record(revision: i64) -> Effect {
    Effect::RecordRevision { revision }
}

#[test]
fn first_revision_deploys_blue_verifies_and_points_the_service_at_it() {
    let mut sim = Sim::new(spec(json!({})));
    let effects = sim.run(60);
    assert_eq!(effects, vec![record(1), apply(Blue, 1), point(Blue)]);
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::Ready));
    assert_eq!((st.stable_revision, st.active_color), (Some(1), Some(Blue)));
    assert_eq!(step_state(st, Step::Verify), Some(StepState::Succeeded));
    assert!(conditions::is_true(&st.conditions, conditions::READY));
    assert_eq!(st.history.first().map(|h| h.result), Some(Phase::Ready));
}

#[test]
fn phases_follow_the_blue_green_runbook() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"previewService": PREVIEW}}}),
    ));
    let mut phases = vec![];
    for _ in 0..60 {
        let plan = sim.step();
        sim.now += secs(1);
        if phases.last() != plan.status.phase.as_ref() {
            phases.extend(plan.status.phase);
        }
        if sim.settled() {
            break;
        }
    }
    assert_eq!(
        phases,
        [
            Phase::Pending,
            Phase::Deploying,
            Phase::CuttingOver,
            Phase::Ready
        ]
    );
    assert_eq!(sim.preview, ServiceState::Selects(Some(Blue)));
}

#[test]
fn next_revision_goes_to_the_other_color_and_keeps_the_old_one_warm_for_the_delay() {
    let mut sim = Sim::ready(spec(
        json!({"strategy": {"blueGreen": {"scaleDownDelay": "60s"}}}),
    ));
    sim.ship("v2");
    let effects = sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    assert_eq!(effects, vec![record(2), apply(Green, 2), point(Green)]);
    sim.now += secs(30);
    let plan = sim.step();
    assert_eq!(plan.effect, None, "blue must stay up during the delay");
    let left = plan.requeue.unwrap_or_default().as_secs();
    assert!((1..=60).contains(&left), "requeue after {left}s");
    assert_eq!(sim.blue.as_ref().map(|d| d.desired), Some(2));
    sim.now += secs(31);
    assert_eq!(sim.step().effect, Some(scale_to_zero(Blue)));
    assert_eq!(sim.step().status.phase, Some(Phase::Ready));
    assert_eq!(
        (sim.status.active_color, sim.status.stable_revision),
        (Some(Green), Some(2))
    );
}

#[test]
fn a_clock_jump_past_the_delay_scales_down_at_once() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.now += secs(3600);
    assert_eq!(sim.step().effect, Some(scale_to_zero(Blue)));
}

#[test]
fn recreate_stops_the_old_color_and_waits_for_its_pods_before_deploying() {
    let mut sim = Sim::ready(recreate(json!({})));
    assert_eq!(sim.status.active_color, Some(Blue));
    sim.ship("v2");
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![
            record(2),
            scale_to_zero(Blue),
            apply(Green, 2),
            point(Green)
        ]
    );
    assert_eq!(sim.status.active_color, Some(Green));
    // And the next revision goes back to blue, stopping green first.
    sim.ship("v3");
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![record(3), scale_to_zero(Green), apply(Blue, 3), point(Blue)]
    );
}

#[test]
fn recreate_counts_pods_even_when_the_stop_was_not_recorded() {
    let mut sim = Sim::ready(recreate(json!({})));
    sim.ship("v2");
    assert_eq!(sim.step().effect, Some(record(2)));
    let plan = sim.reconcile(Crash::AfterEffect);
    assert_eq!(plan.effect, Some(scale_to_zero(Blue)));
    // Blue's pods are still terminating; the checks in `Sim` refuse an
    // apply of green before they are gone.
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::Ready));
}

#[test]
fn recreate_without_a_service_still_alternates_colors() {
    let mut sim = Sim::ready(recreate(
        json!({"strategy": {"recreate": {"service": null}}}),
    ));
    sim.ship("v2");
    assert_eq!(
        sim.run(60),
        vec![record(2), scale_to_zero(Blue), apply(Green, 2)]
    );
}

#[test]
fn a_deploy_that_never_becomes_available_is_undone_without_touching_traffic() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.bad.insert(hash_of(&spec(json!({"version": "v2"}))));
    sim.ship("v2");
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![record(2), apply(Green, 2), scale_to_zero(Green)]
    );
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert!(
        st.failure
            .as_deref()
            .is_some_and(|f| f.contains("Deploy failed")),
        "{:?}",
        st.failure
    );
    assert_eq!((st.active_color, st.stable_revision), (Some(Blue), Some(1)));
    assert_eq!(stalled_reason(st).as_deref(), Some("RolledBack"));
    let last = st.history.first();
    assert!(
        last.is_some_and(|h| h.revision == 2
            && h.result == Phase::RolledBack
            && h.undone.len() == 2),
        "{last:?}"
    );
}

#[test]
fn a_failing_first_revision_has_nothing_to_return_to() {
    let mut sim = Sim::new(spec(json!({})));
    sim.bad.insert(sim.hash());
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![record(1), apply(Blue, 1), scale_to_zero(Blue)]
    );
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.status.stable_revision, None);
}

#[test]
fn abort_after_cutover_moves_traffic_back_before_scaling_down() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.requests.abort = Some(2);
    let effects = sim.run(60);
    assert_eq!(effects, vec![point(Blue), scale_to_zero(Green)]);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.status.active_color, Some(Blue));
}

#[test]
fn abort_after_the_old_color_scaled_down_restores_it_from_its_record() {
    let mut sim = Sim::ready(spec(
        json!({"strategy": {"blueGreen": {"scaleDownDelay": "0s"}}}),
    ));
    sim.ship("v2");
    sim.run_until(60, |s| s.effects.last() == Some(&scale_to_zero(Blue)));
    sim.requests.abort = Some(2);
    let effects = sim.run(60);
    let restore = Effect::RestoreDeployment {
        color: Blue,
        revision: 1,
    };
    assert_eq!(effects, vec![restore, point(Blue), scale_to_zero(Green)]);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
}

#[test]
fn recreate_rollback_brings_the_stopped_version_back_from_its_record() {
    let mut sim = Sim::ready(recreate(json!({})));
    sim.bad.insert(hash_of(&recreate(json!({"version": "v2"}))));
    sim.ship("v2");
    let effects = sim.run(60);
    let restore = Effect::RestoreDeployment {
        color: Blue,
        revision: 1,
    };
    assert_eq!(
        effects,
        vec![
            record(2),
            scale_to_zero(Blue),
            apply(Green, 2),
            restore,
            scale_to_zero(Green)
        ]
    );
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.traffic, ServiceState::Selects(Some(Blue)));
}

#[test]
fn abort_before_anything_changed_fails_the_revision_and_it_stays_failed() {
    let mut sim = Sim::new(spec(json!({})));
    assert_eq!(sim.step().effect, Some(record(1)));
    sim.requests.abort = Some(1);
    let plan = sim.step();
    assert_eq!(
        (plan.effect, plan.status.phase),
        (None, Some(Phase::Failed))
    );
    assert_eq!(plan.status.stable_revision, None);
    for _ in 0..5 {
        let plan = sim.step();
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::Failed))
        );
    }
    assert!(sim.blue.is_none() && sim.green.is_none());
}

#[test]
fn an_abort_naming_another_revision_does_nothing() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.requests.abort = Some(1);
    sim.ship("v2");
    sim.run(60);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(2), Some(Phase::Ready))
    );
}

#[test]
fn without_auto_cutover_only_a_promote_naming_the_revision_cuts_over() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"autoCutover": false}}}),
    ));
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    sim.requests.promote = Some(1);
    sim.run(60);
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    for _ in 0..10 {
        let plan = sim.step();
        sim.now += secs(60);
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::CuttingOver))
        );
    }
    let message = current_message(&sim.status).unwrap_or_default();
    assert!(message.contains("lockkeeper.dev/promote=2"), "{message}");
    assert_eq!(sim.traffic, ServiceState::Selects(Some(Blue)));
    sim.requests.promote = Some(2);
    assert_eq!(sim.step().effect, Some(point(Green)));
}

#[test]
fn retry_restarts_a_rolled_back_revision_under_the_next_number() {
    let mut sim = Sim::ready(spec(json!({})));
    let v2 = hash_of(&spec(json!({"version": "v2"})));
    sim.bad.insert(v2.clone());
    sim.ship("v2");
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    sim.requests.retry = Some(1);
    for _ in 0..3 {
        let plan = sim.step();
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::RolledBack))
        );
    }
    sim.requests.retry = Some(2);
    sim.bad.clear();
    let plan = sim.step();
    assert_eq!(plan.effect, Some(record(3)));
    assert_eq!(plan.status.revision_hash, Some(v2));
    assert!(plan.notes.iter().any(|n| n.reason == "RetryRequested"));
    sim.run(60);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}

#[test]
fn a_missing_active_service_blocks_the_start_with_a_stalled_condition() {
    let mut sim = Sim::new(spec(json!({})));
    sim.traffic = ServiceState::Missing;
    for _ in 0..3 {
        let plan = sim.step();
        assert_eq!(plan.effect, None);
        assert_eq!((plan.status.phase, plan.status.revision), (None, None));
    }
    let stalled = conditions::get(&sim.status.conditions, conditions::STALLED);
    assert!(
        stalled.is_some_and(|c| c.status == "True"
            && c.reason == "ServiceMissing"
            && c.message.contains("Service shop")),
        "{stalled:?}"
    );
    sim.traffic = ServiceState::Selects(None);
    assert_eq!(sim.step().effect, Some(record(1)));
    assert_eq!(stalled_reason(&sim.status), None);
}

#[test]
fn a_missing_service_blocks_a_new_revision_of_a_ready_release() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.traffic = ServiceState::Missing;
    sim.ship("v2");
    let plan = sim.step();
    assert_eq!(plan.effect, None);
    assert_eq!(
        (plan.status.phase, plan.status.revision),
        (Some(Phase::Ready), Some(1))
    );
    assert_eq!(
        stalled_reason(&plan.status).as_deref(),
        Some("ServiceMissing")
    );
}

#[test]
fn an_unsteerable_service_blocks_with_its_own_reason() {
    let mut sim = Sim::new(spec(json!({})));
    sim.traffic = ServiceState::Unsteerable("it is an ExternalName Service".into());
    let plan = sim.step();
    assert_eq!(plan.effect, None);
    assert_eq!(
        stalled_reason(&plan.status).as_deref(),
        Some("ServiceUnsteerable")
    );
}

#[test]
fn a_newer_spec_before_anything_changed_ends_the_run_and_starts_the_next() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    assert_eq!(sim.step().effect, Some(record(2)));
    sim.ship("v3");
    let plan = sim.step();
    assert_eq!(plan.effect, Some(record(3)));
    let ended = plan.status.history.iter().find(|h| h.revision == 2);
    assert!(
        ended.is_some_and(|h| h.result == Phase::Failed),
        "{ended:?}"
    );
    sim.run(60);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}

#[test]
fn a_newer_spec_mid_deploy_rolls_the_run_back_before_starting_the_next() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(10, |s| s.effects.last() == Some(&apply(Green, 2)));
    sim.edit(|s| {
        s.version = "v3".into();
        s.workload.replicas = 3;
    });
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![
            scale_to_zero(Green),
            record(3),
            apply(Green, 3),
            point(Green),
            scale_to_zero(Blue)
        ]
    );
    let results: Vec<_> = sim
        .status
        .history
        .iter()
        .map(|h| (h.revision, h.result))
        .collect();
    assert_eq!(results[..2], [(3, Phase::Ready), (2, Phase::RolledBack)]);
}

#[test]
fn a_newer_spec_while_waiting_for_a_promote_rolls_back_without_one() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"autoCutover": false}}}),
    ));
    sim.requests.promote = Some(1);
    sim.run(60);
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    sim.ship("v3");
    sim.requests.promote = Some(2);
    let effects = sim.run_until(60, |s| s.status.revision == Some(3));
    assert_eq!(effects, vec![scale_to_zero(Green), record(3)]);
}

#[test]
fn a_rollback_is_recorded_before_anything_is_undone() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"autoCutover": false}}}),
    ));
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    sim.ship("v2");
    let plan = sim.step();
    assert_eq!(plan.status.phase, Some(Phase::RollingBack));
    assert_eq!(plan.effect, None, "the decision is written before any undo");
    assert!(plan.requeue.is_some());
    // The first undo happens, its status write is lost, and the newer spec
    // is withdrawn: the recorded rollback still finishes rather than the
    // old run promoting a color that is now scaled to zero.
    let plan = sim.reconcile(Crash::AfterEffect);
    assert_eq!(plan.effect, Some(scale_to_zero(Blue)));
    sim.ship("v1");
    sim.requests.promote = Some(1);
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.effects.last(), Some(&scale_to_zero(Blue)));
}

#[test]
fn a_newer_spec_after_cutover_moves_traffic_back_first() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.ship("v3");
    let effects = sim.run(60);
    assert_eq!(effects[..3], [point(Blue), scale_to_zero(Green), record(3)]);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}

#[test]
fn with_automatic_rollback_off_a_failure_after_a_change_is_left_as_it_is() {
    let mut sim = Sim::ready(spec(json!({"rollback": {"automatic": false}})));
    sim.bad.insert(hash_of(&spec(json!({"version": "v2"}))));
    sim.ship("v2");
    let effects = sim.run(60);
    assert_eq!(effects, vec![record(2), apply(Green, 2)]);
    assert_eq!(sim.status.phase, Some(Phase::Failed));
    let failure = sim.status.history.first().and_then(|h| h.reason.clone());
    assert!(
        failure
            .as_deref()
            .is_some_and(|f| f.contains("automatic rollback is off")),
        "{failure:?}"
    );
    assert_eq!(stalled_reason(&sim.status).as_deref(), Some("Failed"));
}

#[test]
fn terminal_phases_stay_put_while_the_spec_only_changes_what_does_not_ship() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.edit(|s| s.changes.features.push("release notes".into()));
    let plan = sim.step();
    assert_eq!((plan.effect, plan.status.phase), (None, Some(Phase::Ready)));
    assert!(
        plan.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    sim.bad.insert(hash_of(&spec(json!({"version": "v2"}))));
    sim.ship("v2");
    sim.run(60);
    for _ in 0..3 {
        sim.edit(|s| s.changes.fixes.push("typo".into()));
        let plan = sim.step();
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::RolledBack))
        );
    }
}

#[test]
fn a_deleted_active_deployment_is_recreated_while_ready() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.blue = None;
    let plan = sim.step();
    assert_eq!(
        (plan.effect, plan.status.phase),
        (Some(apply(Blue, 1)), Some(Phase::Ready))
    );
    assert!(plan.notes.iter().any(|n| n.reason == "Drift"));
}

#[test]
fn a_crash_around_any_effect_leads_to_the_same_world() {
    let expected = vec![
        record(2),
        apply(Green, 2),
        point(Green),
        scale_to_zero(Blue),
    ];
    for at in 0..expected.len() {
        for crash in [Crash::BeforeEffect, Crash::AfterEffect] {
            let mut sim = Sim::ready(spec(
                json!({"strategy": {"blueGreen": {"scaleDownDelay": "0s"}}}),
            ));
            sim.ship("v2");
            let from = sim.effects.len();
            sim.run_until(60, |s| s.effects.len() == from + at);
            sim.reconcile(crash);
            sim.run(60);
            let mut effects = sim.effects[from..].to_vec();
            effects.dedup();
            assert_eq!(effects, expected, "crash {crash:?} at effect {at}");
            assert_eq!(sim.status.phase, Some(Phase::Ready));
            assert_eq!(sim.traffic, ServiceState::Selects(Some(Green)));
        }
    }
}

#[test]
fn a_crash_after_recording_a_revision_lets_a_newer_spec_take_its_number() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.reconcile(Crash::AfterEffect);
    sim.ship("v3");
    assert_eq!(sim.step().effect, Some(record(2)));
    assert_eq!(
        sim.records.get(&2).map(|r| r.hash.clone()),
        Some(sim.hash())
    );
}

#[test]
fn history_keeps_the_newest_entries_up_to_the_limit() {
    let mut sim = Sim::ready(spec(json!({"historyLimit": 2})));
    for v in ["v2", "v3", "v4"] {
        sim.ship(v);
        sim.run(60);
    }
    let revisions: Vec<i64> = sim.status.history.iter().map(|h| h.revision).collect();
    assert_eq!(revisions, [4, 3]);
}

#[test]
fn undo_steps_follow_the_forward_ones_in_reverse_order() {
    let plain = ReleaseStatus::default();
    assert_eq!(
        steps::undo(&plain, false),
        [Step::RollBackTraffic, Step::ScaleDownNew]
    );
    let forward = steps::forward(&spec(json!({})));
    let at = |s: Step| forward.iter().position(|x| *x == s);
    assert!(at(Step::Verify) < at(Step::CutOver) && at(Step::Deploy) < at(Step::Verify));
    let forward = steps::forward(&recreate(json!({})));
    assert!(at(Step::Stop).is_none());
    let at = |s: Step| forward.iter().position(|x| *x == s);
    assert!(at(Step::Stop) < at(Step::Deploy) && !forward.contains(&Step::CutOver));
}

// ---- properties ----

#[derive(Clone, Debug)]
enum Op {
    Reconcile,
    Crash {
        effect_done: bool,
    },
    /// A change to what ships: version `v{version}`, `replicas` pods, and
    /// perhaps other backups, config and migration (`profile`).
    Ship {
        version: u8,
        replicas: i32,
        profile: Option<u8>,
    },
    /// A change that ships nothing new.
    Touch,
    Promote {
        back: i64,
    },
    Abort {
        back: i64,
    },
    Retry {
        back: i64,
    },
    ClearRequests,
    Clock {
        secs: i64,
    },
    ServiceGone,
    ServiceBack,
    /// The current revision's Jobs are deleted.
    JobsGone,
    /// Something the backup copies goes missing, or comes back.
    Sources {
        broken: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => Just(Op::Reconcile),
        3 => any::<bool>().prop_map(|effect_done| Op::Crash { effect_done }),
        3 => (1u8..=4, 1i32..=3, prop::option::weighted(0.3, 0..PROFILES)).prop_map(
            |(version, replicas, profile)| Op::Ship { version, replicas, profile }
        ),
        1 => Just(Op::Touch),
        1 => (0i64..2).prop_map(|back| Op::Promote { back }),
        1 => (0i64..2).prop_map(|back| Op::Abort { back }),
        1 => (0i64..2).prop_map(|back| Op::Retry { back }),
        1 => Just(Op::ClearRequests),
        1 => (0i64..120).prop_map(|secs| Op::Clock { secs }),
        1 => Just(Op::ServiceGone),
        1 => Just(Op::ServiceBack),
        1 => Just(Op::JobsGone),
        1 => any::<bool>().prop_map(|broken| Op::Sources { broken }),
    ]
}

/// How many data profiles `profile` knows.
const PROFILES: u8 = 4;

/// The backups, config, migration and rollback policy of data profile `n`.
fn profile(n: u8) -> Value {
    match n {
        // None of it.
        0 => json!({}),
        // Everything, with data restores on rollback.
        1 => json!({
            "backup": {
                "configMaps": ["settings"],
                "secrets": ["creds"],
                "volumes": [{"persistentVolumeClaim": "data"}],
                "jobs": [{"name": "dump", "template": job("dump"), "restore": job("load")}],
            },
            "config": {
                "configMaps": [{"name": "app-config", "data": {"mode": "fast"}}],
                "check": {"command": ["app", "--check-config"]},
            },
            "migration": {"job": job("migrate"), "verify": job("verify"), "rollback": job("unmigrate")},
            "rollback": {"restoreVolumes": true},
        }),
        // A migration without rollback; one Secret kept for one revision.
        2 => json!({
            "backup": {"secrets": ["creds"], "keep": 1},
            "migration": {"job": job("migrate")},
        }),
        // Short timeouts, a config check without ConfigMaps, a backup Job
        // without restore, config left alone and volumes restored on
        // rollback.
        _ => json!({
            "backup": {
                "configMaps": ["settings"],
                "volumes": [{"persistentVolumeClaim": "data"}],
                "jobs": [{"name": "dump", "template": job("dump")}],
                "keep": 2,
                "timeout": "20s",
            },
            "config": {"check": {"command": ["app", "--check-config"], "timeout": "5s"}},
            "migration": {"job": job("migrate"), "rollback": job("unmigrate"), "timeout": "30s"},
            "rollback": {"restoreConfig": false, "restoreVolumes": true},
        }),
    }
}

/// `spec` with the backups, config, migration and rollback policy of data
/// profile `n`.
fn with_profile(spec: &ReleaseSpec, n: u8) -> ReleaseSpec {
    let data = self::spec(profile(n));
    let mut spec = spec.clone();
    spec.backup = data.backup;
    spec.config = data.config;
    spec.migration = data.migration;
    spec.rollback = data.rollback;
    spec
}

fn job_kind() -> impl Strategy<Value = JobKind> {
    prop_oneof![
        Just(JobKind::Backup("dump".into())),
        Just(JobKind::Restore("dump".into())),
        Just(JobKind::ConfigCheck),
        Just(JobKind::Migration),
        Just(JobKind::MigrationVerify),
        Just(JobKind::MigrationRollback),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    spec: ReleaseSpec,
    /// Versions whose pods never become ready.
    bad: Vec<u8>,
    /// Jobs that fail in the revisions of a version.
    bad_jobs: Vec<(u8, JobKind)>,
    /// Versions whose VolumeSnapshots fail.
    bad_snapshots: Vec<u8>,
    seed: u64,
    /// The history starts once the first revision has settled.
    warm: bool,
    ops: Vec<Op>,
}

fn case(recreate_strategy: bool) -> impl Strategy<Value = Case> {
    let strategy = (any::<bool>(), any::<bool>(), prop::option::of(0u8..60)).prop_map(
        move |(service, auto_cutover, delay)| {
            if recreate_strategy {
                let service = if service { json!(ACTIVE) } else { Value::Null };
                recreate(json!({"strategy": {"recreate": {"service": service}}}))
            } else {
                let preview = if service { json!(PREVIEW) } else { Value::Null };
                let delay = delay.map_or(Value::Null, |d| json!(format!("{d}s")));
                spec(json!({"strategy": {"blueGreen": {
                    "previewService": preview, "autoCutover": auto_cutover, "scaleDownDelay": delay,
                }}}))
            }
        },
    );
    let versions = || prop::collection::vec(prop::bool::weighted(0.2), 4);
    let chosen = |flags: Vec<bool>| -> Vec<u8> {
        (1u8..=4)
            .zip(flags)
            .filter(|(_, b)| *b)
            .map(|(v, _)| v)
            .collect()
    };
    (
        (strategy, 0..PROFILES),
        versions(),
        prop::collection::vec((1u8..=4, job_kind()), 0..3),
        prop::collection::vec(prop::bool::weighted(0.1), 4),
        (any::<u64>(), any::<bool>()),
        prop::collection::vec(op(), 0..60),
    )
        .prop_map(
            move |((spec, profile), bad, bad_jobs, bad_snapshots, (seed, warm), ops)| Case {
                spec: with_profile(&spec, profile),
                bad: chosen(bad),
                bad_jobs,
                bad_snapshots: chosen(bad_snapshots),
                seed,
                warm,
                ops,
            },
        )
}

fn versioned(spec: &ReleaseSpec, version: u8, replicas: i32) -> ReleaseSpec {
    let mut spec = spec.clone();
    spec.version = format!("v{version}");
    spec.workload.replicas = replicas;
    spec
}

/// Heals the world (the Service back, backup sources there, no abort or
/// retry, a person promoting whatever waits) and reconciles until the
/// current spec's revision is terminal; whether it got there within 200
/// reconciles.
fn settle(sim: &mut Sim) -> bool {
    sim.service_back();
    sim.source_problems.clear();
    sim.requests.abort = None;
    sim.requests.retry = None;
    for _ in 0..200 {
        sim.requests.promote = sim.status.revision;
        let plan = sim.step();
        sim.now += secs(5);
        if plan.effect.is_none() && sim.settled() {
            return true;
        }
    }
    false
}

/// Plays a random history, then lets a healthy world settle.
fn play(case: Case) {
    let mut sim = Sim::seeded(case.spec.clone(), case.seed);
    for v in &case.bad {
        for replicas in 1..=3 {
            for n in 0..PROFILES {
                let spec = versioned(&with_profile(&case.spec, n), *v, replicas);
                sim.bad.insert(hash_of(&spec));
            }
        }
    }
    for (v, kind) in &case.bad_jobs {
        sim.bad_jobs.insert((format!("v{v}"), kind.clone()));
    }
    for v in &case.bad_snapshots {
        sim.bad_snapshots.insert(format!("v{v}"));
    }
    if case.warm {
        sim.trace.push("warm up".into());
        let settled = settle(&mut sim);
        sim.ensure(settled, || "the first revision did not settle".into());
    }
    for op in case.ops {
        sim.trace.push(format!("op {op:?}"));
        let current = sim.status.revision.unwrap_or(0);
        match op {
            Op::Reconcile => {
                sim.step();
            }
            Op::Crash { effect_done } => {
                sim.reconcile(if effect_done {
                    Crash::AfterEffect
                } else {
                    Crash::BeforeEffect
                });
            }
            Op::Ship {
                version,
                replicas,
                profile,
            } => {
                sim.edit(|s| {
                    let shipped = versioned(s, version, replicas);
                    *s = match profile {
                        Some(n) => with_profile(&shipped, n),
                        None => shipped,
                    };
                });
            }
            Op::Touch => sim.edit(|s| s.changes.features.push("more".into())),
            Op::Promote { back } => sim.requests.promote = Some(current - back),
            Op::Abort { back } => sim.requests.abort = Some(current - back),
            Op::Retry { back } => sim.requests.retry = Some(current - back),
            Op::ClearRequests => sim.requests = Requests::default(),
            Op::Clock { secs: s } => sim.now += secs(s),
            Op::ServiceGone => sim.service_gone(),
            Op::ServiceBack => sim.service_back(),
            Op::JobsGone => sim.delete_jobs(),
            Op::Sources { broken } => {
                sim.source_problems = if broken {
                    vec!["Secret creds does not exist".into()]
                } else {
                    Vec::new()
                };
            }
        }
        sim.now += secs(1);
    }
    // 5. From wherever the history left it, a healthy world (the Service
    // back, backup sources there, no abort or retry, a person promoting
    // whatever waits) reaches a terminal phase for the current spec in a
    // bounded number of reconciles, then stays there.
    sim.trace.push("settle".into());
    let settled = settle(&mut sim);
    sim.ensure(settled, || "no terminal phase within 200 reconciles".into());
    // A crash between applying a Deployment and writing the status leaves
    // `appliedGenerations` behind, so Ready may re-apply it once (checked
    // above to be a same-revision repair); after that it is quiet.
    let (phase, revision) = (sim.status.phase, sim.status.revision);
    for quiet in [false, true, true] {
        let plan = sim.step();
        sim.ensure(
            plan.status.phase == phase && plan.status.revision == revision,
            || "a settled release moved".into(),
        );
        sim.ensure(!quiet || plan.effect.is_none(), || {
            "a settled release keeps acting".into()
        });
    }
    if phase == Some(Phase::Ready) {
        sim.ensure(!sim.bad.contains(&sim.hash()), || {
            "a version that never starts became Ready".into()
        });
    }
}

/// Cases per property: enough to reach the data steps' undo paths (a
/// Ready revision, then a failing one with backups and a migration) often,
/// in a few seconds each on two cores in a debug build.
const CASES: u32 = 512;

fn cases() -> u32 {
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => Config::default().cases,
        None => CASES,
    }
}

proptest! {
    // CASES cases each unless PROPTEST_CASES says otherwise; failures are
    // printed with their shrunk case and trace, not written to the source
    // tree.
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    /// Invariants 1–20 on BlueGreen releases through random spec changes
    /// (with and without backups, config and a migration), never-ready
    /// versions, failing Jobs and snapshots, promote/abort/retry requests,
    /// crashes around effects, clock jumps, deleted Jobs, missing backup
    /// sources and a Service that comes and goes.
    #[test]
    fn blue_green_invariants_hold_through_random_histories(case in case(false)) {
        play(case);
    }

    /// The same for Recreate releases, with and without a Service.
    #[test]
    fn recreate_invariants_hold_through_random_histories(case in case(true)) {
        play(case);
    }
}

#[path = "planner_data_tests.rs"]
mod data;
