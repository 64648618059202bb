//! The data-safe steps: backups (runbook 1.3), per-revision config (2.3),
//! the migration (2.4), retention (4.3), and their undo: the
//! down-migration, config restore and (opt-in) data restore.

use std::{collections::BTreeMap, time::Duration};

use super::{
    DEFAULT_BACKUP_TIMEOUT, DEFAULT_CONFIG_CHECK_TIMEOUT, DEFAULT_MIGRATION_TIMEOUT, JOB_GRACE,
    JOB_POLL, Outcome, Planner,
};
use crate::{
    api::{
        release::{BackupSpec, MigrationSpec},
        status::StepState,
    },
    runbook::{
        Effect, JobKind, JobState, SnapshotState, render,
        steps::{self, Step},
    },
};

impl Planner<'_> {
    /// Whether this revision's migration Job exists: it may have run even
    /// when the status write that recorded it was lost.
    pub(super) fn migration_seen(&self) -> bool {
        self.obs.world.jobs.contains_key(&JobKind::Migration)
    }

    /// Whether the revision changed anything that must be undone.
    pub(super) fn anything_changed(&self) -> bool {
        steps::anything_changed(&self.st.steps) || self.migration_seen()
    }

    /// What the revision itself declared: its record while it is undone (a
    /// newer spec may declare something else), the spec otherwise.
    pub(super) fn declared(&self) -> (Option<&MigrationSpec>, Option<&BackupSpec>) {
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
    pub(super) fn acted(&self, step: Step) -> bool {
        self.st
            .steps
            .iter()
            .any(|s| s.name == step.name() && s.state == StepState::Running)
    }

    /// How far `step` has run past `limit`, if it has.
    pub(super) fn overdue(&self, step: Step, limit: Duration) -> bool {
        let since = steps::started_at(&self.st.steps, step).unwrap_or(self.obs.now);
        since
            .checked_add(limit)
            .is_ok_and(|due| self.obs.now >= due)
    }

    /// Runs a runbook Job of this revision: `Ok` once it succeeded, the
    /// outcome to return until then. A Job that ran is never created again:
    /// `once` names the step whose recorded Job must not reappear.
    pub(super) fn job(&self, kind: JobKind, step: Step, limit: Duration) -> Result<(), Outcome> {
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
    pub(super) fn backup(&mut self) -> Outcome {
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
    pub(super) fn config(&mut self) -> Outcome {
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
    pub(super) fn migrate(&mut self) -> Outcome {
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
    pub(super) fn complete(&mut self) -> Outcome {
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
    pub(super) fn retained_revisions(&self) -> Vec<i64> {
        let keep = self.obs.spec.backup.as_ref().map_or(3, |b| b.keep.max(1));
        let revision = self.revision();
        (0..i64::from(keep))
            .map(|k| revision - k)
            .filter(|r| *r > 0)
            .collect()
    }

    /// The rollback policy with its defaults.
    pub(super) fn policy(&self) -> crate::api::RollbackPolicy {
        self.obs.spec.rollback.clone().unwrap_or_default()
    }

    /// Undo: the down-migration, with the new image (it knows what it
    /// created), once the migration itself has stopped.
    pub(super) fn roll_back_migration(&mut self) -> Outcome {
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
    pub(super) fn restore_config(&mut self) -> Outcome {
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
    pub(super) fn restore_data(&mut self) -> Outcome {
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
}

pub(super) fn describe_claims(claims: &BTreeMap<String, String>) -> String {
    claims
        .iter()
        .map(|(from, to)| format!("{to} (in place of {from})"))
        .collect::<Vec<_>>()
        .join(", ")
}
