//! Examples of the data steps — backups, per-revision config, the database
//! migration — and of their undo, played in the same `Sim` (so every
//! invariant in `checks` is checked on every step as well).

use std::collections::BTreeSet;

use super::*;

/// Backups of a ConfigMap, a Secret, a claim and a dump Job with a restore;
/// release-owned config with a check; a migration with verify and rollback.
fn data() -> Value {
    json!({
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
    })
}

/// A BlueGreen spec with all the data steps (the old color scaled down at
/// once after cutover), with `extra` merged in.
fn data_spec(extra: Value) -> ReleaseSpec {
    let mut base = data();
    merge(
        &mut base,
        json!({"strategy": {"blueGreen": {"scaleDownDelay": "0s"}}}),
    );
    merge(&mut base, extra);
    spec(base)
}

/// A Recreate spec with all the data steps, with `extra` merged in.
fn data_recreate(extra: Value) -> ReleaseSpec {
    let mut base = data();
    merge(&mut base, extra);
    recreate(base)
}

fn take_backups(revision: i64) -> Effect {
    Effect::TakeBackups { revision }
}

fn write_config(revision: i64) -> Effect {
    Effect::WriteConfig { revision }
}

fn run(kind: JobKind, revision: i64) -> Effect {
    Effect::RunJob { kind, revision }
}

fn dump() -> JobKind {
    JobKind::Backup("dump".into())
}

fn prune(keep: &[i64]) -> Effect {
    Effect::Prune {
        keep: keep.to_vec(),
    }
}

/// What revision `r` of `data()` does before its Deployment is applied.
fn data_steps(r: i64) -> Vec<Effect> {
    vec![
        take_backups(r),
        run(dump(), r),
        write_config(r),
        run(JobKind::ConfigCheck, r),
        run(JobKind::Migration, r),
        run(JobKind::MigrationVerify, r),
    ]
}

fn message(st: &ReleaseStatus, step: Step) -> String {
    st.steps
        .iter()
        .find(|s| s.name == step.name())
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn stalled_message(st: &ReleaseStatus) -> String {
    conditions::get(&st.conditions, conditions::STALLED)
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The effects that change what runs or what traffic reaches.
fn deploys_or_steers(effects: &[Effect]) -> Vec<&Effect> {
    effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::ApplyDeployment { .. }
                    | Effect::RestoreDeployment { .. }
                    | Effect::PointService { .. }
            )
        })
        .collect()
}

/// Reconciles until the next reconcile sees `kind` of `revision` finish.
fn until_job_finishes(sim: &mut Sim, kind: JobKind, revision: i64) {
    sim.run_until(60, |s| {
        s.jobs.get(&(revision, kind.clone())) == Some(&(s.job_ticks - 1))
    });
}

/// A Ready revision 1 of `spec`, then revision 2 (`v2`) recorded with its
/// migration Job created but that creation's status write lost: the
/// status still shows the config step running.
fn migration_created_then_crash(spec: ReleaseSpec) -> Sim {
    let mut sim = Sim::ready(spec);
    sim.ship("v2");
    until_job_finishes(&mut sim, JobKind::ConfigCheck, 2);
    let plan = sim.reconcile(Crash::AfterEffect);
    assert_eq!(plan.effect, Some(run(JobKind::Migration, 2)));
    assert_eq!(
        step_state(&sim.status, Step::Migrate),
        Some(StepState::Pending)
    );
    sim
}

/// A Ready revision 1 of `spec`, then revision 2 (`v2`) with its migration
/// Job recorded as running (the Job runs for five ticks).
fn migrating(spec: ReleaseSpec) -> Sim {
    let mut sim = Sim::ready(spec);
    sim.job_ticks = 5;
    sim.ship("v2");
    sim.run_until(60, |s| {
        step_state(&s.status, Step::Migrate) == Some(StepState::Running)
    });
    assert_eq!(
        sim.job_state(2, &JobKind::Migration),
        Some(JobState::Running)
    );
    sim
}

#[test]
fn a_revision_backs_up_then_writes_config_then_migrates_then_deploys() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.ship("v2");
    let mut phases = vec![];
    let from = sim.effects.len();
    for _ in 0..60 {
        let plan = sim.step();
        sim.now += secs(1);
        if phases.last() != plan.status.phase.as_ref() {
            phases.extend(plan.status.phase);
        }
        if plan.effect.is_none() && sim.settled() {
            break;
        }
    }
    let mut expected = vec![record(2)];
    expected.extend(data_steps(2));
    expected.extend([
        apply(Green, 2),
        point(Green),
        scale_to_zero(Blue),
        prune(&[2, 1]),
    ]);
    assert_eq!(sim.effects[from..], expected);
    assert_eq!(
        phases,
        [
            Phase::Pending,
            Phase::BackingUp,
            Phase::Migrating,
            Phase::Deploying,
            Phase::CuttingOver,
            Phase::Observing,
            Phase::Ready
        ]
    );
    let st = &sim.status;
    assert_eq!(
        (st.stable_revision, st.active_color),
        (Some(2), Some(Green))
    );
    assert_eq!(
        message(st, Step::Backup),
        "backed up 1 ConfigMap(s), 1 Secret(s), 1 volume(s) and 1 Job(s) before revision 2"
    );
    assert_eq!(
        message(st, Step::Config),
        "wrote app-config-r2; the config check passed"
    );
    assert_eq!(
        message(st, Step::Migrate),
        "migrated; the verify Job passed"
    );
    let migrate = st.steps.iter().find(|s| s.name == Step::Migrate.name());
    assert_eq!(
        migrate.and_then(|s| s.job.as_deref()),
        Some("shop-migrate-r2")
    );
    let backup = st.backups.iter().find(|b| b.revision == 2);
    assert!(
        backup.is_some_and(|b| b.config_maps.get("settings").map(String::as_str)
            == Some("shop-backup-r2-settings")
            && b.secrets.get("creds").map(String::as_str) == Some("shop-backup-r2-creds")
            && b.volume_snapshots.get("data").map(String::as_str) == Some("shop-data-r2")
            && b.jobs == ["shop-backup-dump-r2"]),
        "{backup:?}"
    );
    assert!(sim.job_creations.values().all(|n| *n == 1));
}

#[test]
fn recreate_checks_config_before_it_stops_the_old_version_and_migrates_after() {
    let mut sim = Sim::ready(data_recreate(json!({})));
    sim.ship("v2");
    let effects = sim.run(60);
    let mut expected = vec![record(2)];
    let mut data = data_steps(2);
    let migration = data.split_off(4);
    expected.extend(data);
    expected.push(scale_to_zero(Blue));
    expected.extend(migration);
    expected.extend([apply(Green, 2), point(Green), prune(&[2, 1])]);
    assert_eq!(effects, expected);
    assert_eq!(
        (sim.status.phase, sim.status.active_color),
        (Some(Phase::Ready), Some(Green))
    );
}

#[test]
fn nothing_is_deployed_until_the_migration_and_its_verification_succeed() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.job_ticks = 4;
    sim.ship("v2");
    for _ in 0..60 {
        let plan = sim.step();
        sim.now += secs(1);
        let verified = sim.job_succeeded(2, &JobKind::Migration)
            && sim.job_succeeded(2, &JobKind::MigrationVerify);
        assert!(
            verified || sim.green.is_none(),
            "green deployed before the migration was verified\n{}",
            sim.dump()
        );
        let before = matches!(
            plan.status.phase,
            Some(Phase::Pending | Phase::BackingUp | Phase::Migrating)
        );
        assert!(
            verified || before,
            "{:?} before the migration was verified",
            plan.status.phase
        );
        if sim.settled() && plan.effect.is_none() {
            break;
        }
    }
    assert_eq!(sim.status.phase, Some(Phase::Ready));
}

#[test]
fn a_failing_migration_rolls_back_schema_and_config_without_moving_traffic() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.bad_jobs.insert(("v2".into(), JobKind::Migration));
    sim.ship("v2");
    let effects = sim.run(60);
    let mut expected = vec![record(2)];
    expected.extend(data_steps(2).into_iter().take(5));
    expected.extend([
        run(JobKind::MigrationRollback, 2),
        Effect::RestoreConfig { revision: 2 },
    ]);
    assert_eq!(effects, expected);
    assert!(deploys_or_steers(&effects).is_empty());
    assert_eq!(sim.traffic, ServiceState::Selects(Some(Blue)));
    assert!(sim.green.is_none());
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert_eq!((st.active_color, st.stable_revision), (Some(Blue), Some(1)));
    let undo: Vec<(&str, StepState)> = st
        .steps
        .iter()
        .filter(|s| Step::from_name(&s.name).is_some_and(Step::is_undo))
        .map(|s| (s.name.as_str(), s.state))
        .collect();
    assert_eq!(
        undo,
        [
            ("RollBackTraffic", StepState::Succeeded),
            ("ScaleDownNew", StepState::Succeeded),
            ("RollBackMigration", StepState::Succeeded),
            ("RestoreConfig", StepState::Succeeded),
            ("RestoreData", StepState::Skipped),
        ]
    );
    // The down-migration starts only once traffic is back.
    let traffic_back = steps::finished_at(&st.steps, Step::RollBackTraffic);
    let down = steps::started_at(&st.steps, Step::RollBackMigration);
    assert!(traffic_back.is_some() && traffic_back <= down);
    assert_eq!(
        message(st, Step::RollBackTraffic),
        "traffic never left blue"
    );
    assert_eq!(
        message(st, Step::RollBackMigration),
        "migration of revision 2 rolled back by shop-migrate-rollback-r2"
    );
    assert_eq!(
        message(st, Step::RestoreConfig),
        "restored ConfigMap settings, Secret creds as copied before revision 2"
    );
    let failure = "Migrate failed: the migration Job shop-migrate-r2 failed: exit 1";
    assert_eq!(st.failure.as_deref(), Some(failure));
    assert_eq!(
        stalled_message(st),
        format!(
            "{failure}; left as is: data left as it is: rollback.restoreVolumes is off (the backups of revision 2 are kept)"
        )
    );
    let last = st.history.first();
    assert!(
        last.is_some_and(|h| h.result == Phase::RolledBack
            && h.undone
                == [
                    "traffic never left blue",
                    "green was never created",
                    "migration of revision 2 rolled back by shop-migrate-rollback-r2",
                    "restored ConfigMap settings, Secret creds as copied before revision 2",
                ]),
        "{last:?}"
    );
    assert!(sim.config_restored.contains(&2));
    assert_eq!(sim.job_created(2, &JobKind::MigrationVerify), 0);
}

#[test]
fn a_failing_verification_is_rolled_back_like_a_failing_migration() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.bad_jobs.insert(("v2".into(), JobKind::MigrationVerify));
    sim.ship("v2");
    let effects = sim.run(60);
    assert!(deploys_or_steers(&effects).is_empty(), "{effects:?}");
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 1);
    assert!(
        sim.status.failure.as_deref().is_some_and(|f| f
            .starts_with("Migrate failed: the migration verify Job shop-migrate-verify-r2 failed")),
        "{:?}",
        sim.status.failure
    );
}

#[test]
fn a_migration_without_a_rollback_leaves_the_schema_and_says_so() {
    let mut sim = Sim::ready(data_spec(
        json!({"migration": {"verify": null, "rollback": null}}),
    ));
    sim.bad_jobs.insert(("v2".into(), JobKind::Migration));
    sim.ship("v2");
    let effects = sim.run(60);
    assert!(!effects.contains(&run(JobKind::MigrationRollback, 2)));
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    let left = "database left at revision 2's schema: no migration rollback defined";
    assert_eq!(
        step_state(st, Step::RollBackMigration),
        Some(StepState::Skipped)
    );
    assert_eq!(message(st, Step::RollBackMigration), left);
    let stalled = stalled_message(st);
    assert!(
        stalled.contains(&format!("left as is: {left}")),
        "{stalled}"
    );
    assert_eq!(stalled_reason(st).as_deref(), Some("RolledBack"));
    assert!(st.history.first().is_some_and(|h| {
        h.reason
            .as_deref()
            .is_some_and(|r| r.contains("Migrate failed"))
    }));
}

#[test]
fn with_migration_rollback_off_the_schema_is_left_and_the_rollback_says_so() {
    let mut sim = Sim::ready(data_spec(
        json!({"rollback": {"runMigrationRollback": false}}),
    ));
    sim.bad_jobs.insert(("v2".into(), JobKind::Migration));
    sim.ship("v2");
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 0);
    assert!(
        stalled_message(&sim.status)
            .contains("database left at revision 2's schema: rollback.runMigrationRollback is off"),
        "{}",
        stalled_message(&sim.status)
    );
}

#[test]
fn a_failing_config_check_fails_the_revision_with_nothing_changed() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.bad_jobs.insert(("v2".into(), JobKind::ConfigCheck));
    sim.ship("v2");
    let effects = sim.run(60);
    let mut expected = vec![record(2)];
    expected.extend(data_steps(2).into_iter().take(4));
    assert_eq!(effects, expected);
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::Failed));
    let failure = "Config failed: the config check Job shop-config-check-r2 failed: exit 1; nothing was changed";
    assert_eq!(st.failure.as_deref(), Some(failure));
    assert_eq!(stalled_message(st), failure);
    assert_eq!(stalled_reason(st).as_deref(), Some("Failed"));
    assert!(sim.green.is_none());
    assert_eq!(sim.job_created(2, &JobKind::Migration), 0);
    assert_eq!((st.active_color, st.stable_revision), (Some(Blue), Some(1)));
}

#[test]
fn a_failing_backup_job_fails_the_revision_with_nothing_changed() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.bad_jobs.insert(("v2".into(), dump()));
    sim.ship("v2");
    let effects = sim.run(60);
    assert_eq!(effects, vec![record(2), take_backups(2), run(dump(), 2)]);
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(
        st.failure.as_deref(),
        Some(
            "Backup failed: the backup Job \"dump\" shop-backup-dump-r2 failed: exit 1; nothing was changed"
        )
    );
    assert!(sim.green.is_none() && !sim.configs.contains(&2));
}

#[test]
fn a_failed_volume_snapshot_fails_the_revision_naming_the_snapshot() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.bad_snapshots.insert("v2".into());
    sim.ship("v2");
    let effects = sim.run(60);
    assert!(deploys_or_steers(&effects).is_empty(), "{effects:?}");
    assert!(!effects.contains(&write_config(2)));
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(
        st.failure.as_deref(),
        Some(
            "Backup failed: VolumeSnapshot shop-data-r2 of claim data failed: the CSI driver refused the snapshot; nothing was changed"
        )
    );
    assert_eq!(stalled_reason(st).as_deref(), Some("Failed"));
}

#[test]
fn missing_backup_sources_fail_the_revision_before_any_backup() {
    let mut sim = Sim::ready(data_spec(json!({})));
    sim.source_problems = vec![
        "ConfigMap settings does not exist".into(),
        "the VolumeSnapshot API is not served".into(),
    ];
    sim.ship("v2");
    let effects = sim.run(60);
    // Recording what revision 2 ships is all that happens: not even
    // TakeBackups.
    assert_eq!(effects, vec![record(2)]);
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::Failed));
    let failure = "Backup failed: ConfigMap settings does not exist; the VolumeSnapshot API is not served; nothing was changed";
    assert_eq!(st.failure.as_deref(), Some(failure));
    assert_eq!(stalled_message(st), failure);
    assert!(!st.backups.iter().any(|b| b.revision == 2));
    assert!(!sim.backups_taken.contains(&2));
}

#[test]
fn a_rollback_after_cutover_restores_volumes_when_allowed() {
    let mut sim = Sim::ready(data_spec(json!({
        "rollback": {"restoreVolumes": true},
        "strategy": {"blueGreen": {"scaleDownDelay": "60s"}},
    })));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.requests.abort = Some(2);
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![
            point(Blue),
            scale_to_zero(Green),
            run(JobKind::MigrationRollback, 2),
            Effect::RestoreConfig { revision: 2 },
            Effect::RestoreVolumes {
                revision: 2,
                color: Blue,
                stable: 1
            },
            run(JobKind::Restore("dump".into()), 2),
        ]
    );
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert_eq!(
        st.restored_claims,
        BTreeMap::from([("data".to_owned(), "data-restored-r2".to_owned())])
    );
    assert_eq!(
        message(st, Step::RestoreData),
        "blue now mounts data-restored-r2 (in place of data); backup \"dump\" restored"
    );
    assert_eq!(
        sim.blue.as_ref().map(|d| (d.revision, d.desired)),
        Some((1, 2))
    );
    assert_eq!(sim.traffic, ServiceState::Selects(Some(Blue)));
    assert!(sim.volumes_restored.contains(&2));
}

#[test]
fn with_restore_volumes_off_the_data_is_left_and_the_rollback_says_so() {
    let mut sim = Sim::ready(data_spec(
        json!({"strategy": {"blueGreen": {"scaleDownDelay": "60s"}}}),
    ));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.requests.abort = Some(2);
    let effects = sim.run(60);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::RestoreVolumes { .. })
                || matches!(
                    e,
                    Effect::RunJob {
                        kind: JobKind::Restore(_),
                        ..
                    }
                )),
        "{effects:?}"
    );
    let st = &sim.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    let left =
        "data left as it is: rollback.restoreVolumes is off (the backups of revision 2 are kept)";
    assert_eq!(step_state(st, Step::RestoreData), Some(StepState::Skipped));
    assert_eq!(message(st, Step::RestoreData), left);
    assert!(stalled_message(st).ends_with(&format!("left as is: {left}")));
    assert!(st.restored_claims.is_empty());
    assert!(st.backups.iter().any(|b| b.revision == 2));
}

#[test]
fn retention_keeps_the_backups_and_config_of_the_last_keep_revisions() {
    let mut sim = Sim::ready(data_spec(json!({"backup": {"keep": 3}})));
    for v in ["v2", "v3", "v4", "v5", "v6"] {
        sim.ship(v);
        sim.run(60);
        assert_eq!(sim.status.phase, Some(Phase::Ready));
    }
    let prunes: Vec<Vec<i64>> = sim
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Prune { keep } => Some(keep.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        prunes,
        [
            vec![1],
            vec![2, 1],
            vec![3, 2, 1],
            vec![4, 3, 2],
            vec![5, 4, 3],
            vec![6, 5, 4]
        ]
    );
    let held: Vec<i64> = sim.status.backups.iter().map(|b| b.revision).collect();
    assert_eq!(held, [6, 5, 4]);
    assert_eq!(sim.backups_taken, BTreeSet::from([4, 5, 6]));
    assert_eq!(sim.configs, BTreeSet::from([4, 5, 6]));
}

#[test]
fn the_migration_rollback_waits_for_a_running_migration_to_stop() {
    let mut sim = migrating(data_spec(json!({})));
    sim.requests.abort = Some(2);
    let plan = sim.step();
    assert_eq!(
        (plan.status.phase, plan.effect),
        (Some(Phase::RollingBack), None)
    );
    let mut waits = 0;
    for _ in 0..20 {
        let running = sim.job_state(2, &JobKind::Migration) == Some(JobState::Running);
        let plan = sim.step();
        sim.now += secs(1);
        if plan.effect == Some(run(JobKind::MigrationRollback, 2)) {
            break;
        }
        assert_eq!(plan.effect, None);
        if current_message(&plan.status).as_deref()
            == Some("waiting for the migration Job to stop before rolling it back")
        {
            waits += 1;
        }
        assert!(running || waits > 0, "{}", sim.dump());
    }
    assert!(waits > 0, "{}", sim.dump());
    assert!(sim.job_succeeded(2, &JobKind::Migration));
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 1);
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
}

#[test]
fn a_crash_around_any_data_effect_leads_to_the_same_world() {
    let mut expected = vec![record(2)];
    expected.extend(data_steps(2));
    expected.extend([
        apply(Green, 2),
        point(Green),
        scale_to_zero(Blue),
        prune(&[2, 1]),
    ]);
    for at in 0..expected.len() {
        for crash in [Crash::BeforeEffect, Crash::AfterEffect] {
            let mut sim = Sim::ready(data_spec(json!({})));
            sim.ship("v2");
            let from = sim.effects.len();
            sim.run_until(60, |s| s.effects.len() == from + at);
            sim.reconcile(crash);
            sim.run(60);
            let mut effects = sim.effects[from..].to_vec();
            effects.dedup();
            assert_eq!(effects, expected, "crash {crash:?} at effect {at}");
            assert_eq!(sim.status.phase, Some(Phase::Ready));
            assert!(
                sim.job_creations.values().all(|n| *n == 1),
                "crash {crash:?} at effect {at}: {:?}",
                sim.job_creations
            );
        }
    }
}

#[test]
fn the_first_ready_revision_with_backups_becomes_the_stable_one() {
    for spec in [data_spec(json!({})), data_recreate(json!({}))] {
        let sim = Sim::ready(spec);
        let st = &sim.status;
        assert_eq!(step_state(st, Step::Complete), Some(StepState::Succeeded));
        assert_eq!((st.stable_revision, st.active_color), (Some(1), Some(Blue)));
        assert_eq!(
            st.history.first().map(|h| (h.revision, h.result)),
            Some((1, Phase::Ready))
        );
    }
}

#[test]
fn recreate_with_config_alternates_colors() {
    let mut sim = Sim::ready(data_recreate(json!({})));
    sim.ship("v2");
    let effects = sim.run(60);
    assert!(effects.contains(&scale_to_zero(Blue)), "{effects:?}");
    assert!(effects.contains(&apply(Green, 2)), "{effects:?}");
}

// ---- crashes, deleted Jobs and newer specs around the migration ----

#[test]
fn a_migration_job_deleted_after_a_lost_status_write_is_not_run_again() {
    let mut sim = migration_created_then_crash(data_spec(json!({})));
    // The next reconcile sees the Job running and records the step as
    // running; then the Job is deleted before anyone saw its result.
    sim.step();
    assert_eq!(
        step_state(&sim.status, Step::Migrate),
        Some(StepState::Running)
    );
    sim.delete_jobs();
    sim.run(60);
    assert_eq!(sim.job_created(2, &JobKind::Migration), 1);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
}

#[test]
fn an_abort_right_after_a_lost_status_write_still_undoes_the_migration() {
    let mut sim = migration_created_then_crash(data_spec(json!({})));
    sim.requests.abort = Some(2);
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 1);
}

#[test]
fn a_newer_spec_right_after_a_lost_status_write_still_undoes_the_migration() {
    let mut sim = migration_created_then_crash(data_spec(json!({})));
    sim.ship("v3");
    sim.run(60);
    let results: Vec<_> = sim
        .status
        .history
        .iter()
        .map(|h| (h.revision, h.result))
        .collect();
    assert_eq!(results[..2], [(3, Phase::Ready), (2, Phase::RolledBack)]);
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 1);
}

#[test]
fn a_superseded_revision_rolls_back_its_own_migration() {
    let mut sim = migrating(data_spec(json!({})));
    // The newer spec drops the migration; revision 2 declared a rollback
    // and its migration ran.
    sim.edit(|s| {
        s.version = "v3".into();
        s.migration = None;
    });
    sim.run(60);
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 1);
    let ended = sim.status.history.iter().find(|h| h.revision == 2);
    assert!(
        ended.is_some_and(|h| h.result == Phase::RolledBack
            && h.undone
                .iter()
                .any(|u| u.contains("migration of revision 2 rolled back"))),
        "{ended:?}"
    );
}

#[test]
fn a_superseded_revision_without_a_migration_rollback_is_not_rolled_back_with_the_newer_one() {
    let mut sim = migrating(data_spec(json!({"migration": {"rollback": null}})));
    // The newer spec adds a rollback; revision 2 declared none, so there is
    // nothing `execute` could run for it.
    sim.edit(|s| {
        s.version = "v3".into();
        if let Some(m) = s.migration.as_mut() {
            m.rollback = m.verify.clone();
        }
    });
    assert!(
        sim.spec
            .migration
            .as_ref()
            .is_some_and(|m| m.rollback.is_some())
    );
    sim.run(60);
    assert_eq!(sim.job_created(2, &JobKind::MigrationRollback), 0);
    let ended = sim.status.history.iter().find(|h| h.revision == 2);
    assert!(
        ended.is_some_and(|h| h.result == Phase::RolledBack),
        "{ended:?}"
    );
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}

#[test]
fn a_superseded_revision_runs_only_the_restore_jobs_it_declared() {
    let mut sim = Sim::ready(data_spec(json!({
        "backup": {"volumes": [], "jobs": [{"name": "dump", "template": job("dump")}]},
        "rollback": {"restoreVolumes": true},
        "strategy": {"blueGreen": {"scaleDownDelay": "60s"}},
    })));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    // The newer spec gives the dump a restore; revision 2's backup has none.
    sim.edit(|s| {
        s.version = "v3".into();
        for j in s.backup.iter_mut().flat_map(|b| b.jobs.iter_mut()) {
            j.restore = serde_json::from_value(job("load")).ok();
        }
    });
    assert!(
        sim.spec
            .backup
            .as_ref()
            .is_some_and(|b| b.jobs.iter().all(|j| j.restore.is_some()))
    );
    sim.run(150);
    assert_eq!(sim.job_created(2, &JobKind::Restore("dump".into())), 0);
    let ended = sim.status.history.iter().find(|h| h.revision == 2);
    assert!(
        ended.is_some_and(|h| h.result == Phase::RolledBack),
        "{ended:?}"
    );
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}
