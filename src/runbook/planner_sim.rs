//! The simulated cluster the planner tests play releases in.
//!
//! `Sim` replays the controller loop against a small simulated world: it
//! observes the way `observe` does (pods only while Stopping, the stable
//! record only while RollingBack), plans, performs the effect the way
//! `execute` and Kubernetes would, and writes the plan's status — or crashes
//! before or after the effect without writing it. Every plan, effect and
//! status write is checked against the runbook's invariants (`checks`) as
//! it happens, so the examples and the property tests share one set of
//! checks.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::{
    api::ReleaseSpec,
    runbook::{DeploymentState, JobKind, JobState, Requests, SnapshotState, render::Shipped},
};

/// Ticks after which a Deployment whose pods never get ready reports
/// ProgressDeadlineExceeded.
const DEADLINE_TICKS: u32 = 4;

pub(super) fn hash_of(spec: &ReleaseSpec) -> String {
    Shipped::of(spec).hash()
}

pub(super) fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

pub(super) fn undoing(st: &ReleaseStatus) -> bool {
    st.steps
        .iter()
        .any(|s| Step::from_name(&s.name).is_some_and(Step::is_undo))
}

pub(super) fn step_state(st: &ReleaseStatus, step: Step) -> Option<StepState> {
    st.steps
        .iter()
        .find(|s| s.name == step.name())
        .map(|s| s.state)
}

/// One color's Deployment and its pods, as the Deployment controller and
/// the kubelet would move them.
#[derive(Clone, Debug)]
pub(super) struct Dep {
    pub(super) revision: i64,
    pub(super) hash: String,
    pub(super) desired: i32,
    available: i32,
    pods: u32,
    pub(super) generation: i64,
    observed_generation: i64,
    /// Ticks since the current rollout began.
    age: u32,
    observe_after: u32,
    ready_after: u32,
    never_ready: bool,
    deadline_exceeded: bool,
}

impl Dep {
    pub(super) fn state(&self) -> DeploymentState {
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
pub(super) struct Record {
    pub(super) hash: String,
    replicas: i32,
    /// The spec it was recorded from (what `execute` reads the revision's
    /// migration rollback and restore Jobs from).
    pub(super) spec: ReleaseSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Crash {
    /// The effect is performed and the status written.
    No,
    /// The plan is made, then the controller dies.
    BeforeEffect,
    /// The effect is performed, then the controller dies before the status
    /// write.
    AfterEffect,
}

pub(super) struct Sim {
    pub(super) now: Timestamp,
    pub(super) generation: i64,
    pub(super) spec: ReleaseSpec,
    pub(super) status: ReleaseStatus,
    pub(super) blue: Option<Dep>,
    pub(super) green: Option<Dep>,
    pub(super) traffic: ServiceState,
    /// The traffic Service as it was before it was deleted.
    traffic_saved: Option<ServiceState>,
    pub(super) preview: ServiceState,
    pub(super) records: BTreeMap<i64, Record>,
    pub(super) requests: Requests,
    /// Hashes whose pods never become ready.
    pub(super) bad: BTreeSet<String>,
    rng: u64,
    /// Revision → hash, from every status written so far.
    pub(super) hashes: BTreeMap<i64, String>,
    /// Revisions whose new color a rollback has scaled down.
    pub(super) undo_scaled: BTreeSet<i64>,
    /// The traffic Service went missing during the current revision.
    pub(super) glitch: bool,
    /// Runbook Jobs that exist, by revision and kind: their age in ticks.
    pub(super) jobs: BTreeMap<(i64, JobKind), u32>,
    /// How many ticks a Job runs before it finishes.
    pub(super) job_ticks: u32,
    /// How often each runbook Job was created.
    pub(super) job_creations: BTreeMap<(i64, JobKind), u32>,
    /// Jobs that existed when a status was last written.
    jobs_seen: BTreeSet<(i64, JobKind)>,
    /// Jobs that finished successfully, even if deleted since.
    succeeded_jobs: BTreeSet<(i64, JobKind)>,
    /// Jobs (by kind) that fail, in every revision.
    failing_jobs: BTreeSet<JobKind>,
    /// Jobs that fail in the revisions shipping a version.
    pub(super) bad_jobs: BTreeSet<(String, JobKind)>,
    /// Revisions whose config ConfigMaps exist.
    pub(super) configs: BTreeSet<i64>,
    /// Revisions whose backups were taken (and not pruned).
    pub(super) backups_taken: BTreeSet<i64>,
    /// VolumeSnapshots by revision and claim: their age in ticks.
    snapshots: BTreeMap<(i64, String), u32>,
    /// Claims whose snapshots fail, in every revision.
    failing_snapshots: BTreeSet<String>,
    /// Versions whose snapshots fail.
    pub(super) bad_snapshots: BTreeSet<String>,
    /// What the backup step's source lookup reports as missing.
    pub(super) source_problems: Vec<String>,
    /// Revisions whose config was restored.
    pub(super) config_restored: BTreeSet<i64>,
    /// Revisions whose volumes were restored.
    pub(super) volumes_restored: BTreeSet<i64>,
    /// Effects performed, in order.
    pub(super) effects: Vec<Effect>,
    pub(super) trace: Vec<String>,
}

impl Sim {
    pub(super) fn new(spec: ReleaseSpec) -> Self {
        Self::seeded(spec, 0x9E37_79B9_7F4A_7C15)
    }

    pub(super) fn seeded(spec: ReleaseSpec, seed: u64) -> Self {
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
    pub(super) fn ready(spec: ReleaseSpec) -> Self {
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

    pub(super) fn hash(&self) -> String {
        hash_of(&self.spec)
    }

    pub(super) fn blue_green(&self) -> bool {
        self.spec.strategy.blue_green.is_some()
    }

    pub(super) fn auto_cutover(&self) -> bool {
        self.spec
            .strategy
            .blue_green
            .as_ref()
            .is_none_or(|b| b.auto_cutover)
    }

    pub(super) fn automatic_rollback(&self) -> bool {
        self.spec
            .rollback
            .as_ref()
            .and_then(|r| r.automatic)
            .unwrap_or(true)
    }

    pub(super) fn scale_down_delay(&self) -> SignedDuration {
        let delay = self
            .spec
            .strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.scale_down_delay)
            .map_or(DEFAULT_SCALE_DOWN_DELAY, Into::into);
        SignedDuration::try_from(delay).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn traffic_name(&self) -> Option<String> {
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

    pub(super) fn preview_name(&self) -> Option<String> {
        self.spec
            .strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.preview_service.clone())
    }

    pub(super) fn dep(&self, color: Color) -> Option<&Dep> {
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

    pub(super) fn pods(&self, color: Color) -> u32 {
        self.dep(color).map_or(0, |d| d.pods)
    }

    /// The condition reason a start is blocked with, if the traffic Service
    /// cannot be steered.
    pub(super) fn traffic_problem(&self) -> Option<&'static str> {
        self.traffic_name()?;
        match self.traffic {
            ServiceState::Missing => Some("ServiceMissing"),
            ServiceState::Unsteerable(_) => Some("ServiceUnsteerable"),
            ServiceState::Selects(_) => None,
        }
    }

    /// What `observe::world` and `observe::requests` would report.
    pub(super) fn observed(&self) -> Observed<'_> {
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
    pub(super) fn job_kinds(&self) -> Vec<JobKind> {
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
    pub(super) fn job_fails(&self, revision: i64, kind: &JobKind) -> bool {
        self.failing_jobs.contains(kind)
            || self.records.get(&revision).is_some_and(|r| {
                self.bad_jobs
                    .contains(&(r.spec.version.clone(), kind.clone()))
            })
    }

    /// Where Job `kind` of `revision` is, if it exists: running for
    /// `job_ticks` ticks, then done.
    pub(super) fn job_state(&self, revision: i64, kind: &JobKind) -> Option<JobState> {
        let age = *self.jobs.get(&(revision, kind.clone()))?;
        Some(if age < self.job_ticks {
            JobState::Running
        } else if self.job_fails(revision, kind) {
            JobState::Failed("exit 1".into())
        } else {
            JobState::Succeeded
        })
    }

    pub(super) fn job_succeeded(&self, revision: i64, kind: &JobKind) -> bool {
        self.succeeded_jobs.contains(&(revision, kind.clone()))
    }

    pub(super) fn job_created(&self, revision: i64, kind: &JobKind) -> u32 {
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
    pub(super) fn delete_jobs(&mut self) {
        let revision = self.status.revision.unwrap_or_default();
        let seen = &self.jobs_seen;
        self.jobs
            .retain(|key, _| key.0 != revision || !seen.contains(key));
    }

    // ---- the controller loop ----

    /// One reconcile: the world moves on, then observe, plan, act, record.
    pub(super) fn reconcile(&mut self, crash: Crash) -> Plan {
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

    pub(super) fn step(&mut self) -> Plan {
        self.reconcile(Crash::No)
    }

    /// Reconciles, a second apart, until the current spec's revision is
    /// terminal and nothing is left to do; returns the effects performed.
    pub(super) fn run(&mut self, max: usize) -> Vec<Effect> {
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
    pub(super) fn run_until(&mut self, max: usize, done: impl Fn(&Sim) -> bool) -> Vec<Effect> {
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

    pub(super) fn settled(&self) -> bool {
        self.status.phase.is_some_and(Phase::is_terminal)
            && self.status.revision_hash.as_deref() == Some(self.hash().as_str())
    }

    /// Changes the spec, as `kubectl apply` would.
    pub(super) fn edit(&mut self, change: impl FnOnce(&mut ReleaseSpec)) {
        change(&mut self.spec);
        self.generation += 1;
        self.trace.push(format!(
            "edit: generation {} hash {}",
            self.generation,
            self.hash()
        ));
    }

    pub(super) fn ship(&mut self, version: &str) {
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
    pub(super) fn declares(&self, kind: &JobKind, revision: i64) -> bool {
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

    pub(super) fn service_gone(&mut self) {
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

    pub(super) fn service_back(&mut self) {
        if let Some(saved) = self.traffic_saved.take() {
            self.traffic = saved;
            self.undo_scaled.clear();
        }
    }
}
