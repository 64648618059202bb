//! The runbook's invariants, numbered 1–20, checked by `Sim` on every plan
//! (`check_plan`), effect (`check_effect`) and status write
//! (`check_write`) as it happens.

use serde_json::{Value, json};

use super::{sim::undoing, *};
use crate::{api::status::StepStatus, runbook::JobKind};

impl Sim {
    pub(super) fn dump(&self) -> String {
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
    pub(super) fn ensure(&self, ok: bool, what: impl FnOnce() -> String) {
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
    pub(super) fn check_plan(&self, plan: &Plan) {
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
    pub(super) fn check_effect(&self, effect: &Effect, out: &ReleaseStatus) {
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
    pub(super) fn check_write(&mut self, out: &ReleaseStatus) {
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

fn finished(state: Option<StepState>) -> bool {
    matches!(
        state,
        Some(StepState::Succeeded | StepState::Failed | StepState::Skipped)
    )
}

pub(super) fn stalled_reason(st: &ReleaseStatus) -> Option<String> {
    conditions::get(&st.conditions, conditions::STALLED)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
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
