//! Backups, per-revision config, migrations and the data-safe rollback on
//! the real control plane. Migration, backup and check Jobs are real Jobs
//! whose pods kwok completes or fails (see `e2e/cluster/kwok/pod-stages.yaml`);
//! a test flips a held pod to failing by relabelling it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{ConfigMap, Pod, Secret},
    },
};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use lockkeeper::api::{Phase, Release, status::StepState};
use rand::Rng;
use serde_json::{Value, json};

use crate::{
    runbook::{LONG, apply, blue_green, release, setup, wait_phase},
    support::{
        BEHAVIOR_LABEL, FAIL, NEVER_READY, Operator, SnapshotDouble, TestNamespace, create_pvc,
        create_snapshot_class, poll_until, snapshot_crds_absent, snapshot_crds_present, wait_for,
    },
};

/// A pod label value no kwok stage knows: Job pods carrying it run until
/// a test relabels them.
const HOLD: &str = NEVER_READY;

fn job(labels: Value, command: &str) -> Value {
    json!({
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "task", "command": [command]}]}
        }
    })
}

async fn create_config_map(ns: &TestNamespace, name: &str, data: Value) -> ConfigMap {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"team": "shop"}},
        "data": data,
        "binaryData": {"blob": "AAEC/w=="},
    }))
    .unwrap_or_else(|e| panic!("ConfigMap manifest: {e}"));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("creating ConfigMap {name}: {e}"))
}

async fn create_secret(ns: &TestNamespace, name: &str, password: &str) -> Secret {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"))
}

/// Waits for the pod of Job `job` and relabels it so kwok fails it.
async fn fail_job_pod(ns: &TestNamespace, job: &str) {
    let pods = ns.api::<Pod>();
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let pod = poll_until(&format!("a running pod of Job {job}"), LONG, || async {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .ok_or_else(|| "no running pod yet".to_owned())
    })
    .await;
    let patch = json!({"metadata": {"labels": {BEHAVIOR_LABEL: FAIL}}});
    pods.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap_or_else(|e| panic!("relabelling pod {}: {e}", pod.name_any()));
}

fn step<'a>(r: &'a Release, name: &str) -> Option<&'a lockkeeper::api::status::StepStatus> {
    r.status.as_ref()?.steps.iter().find(|s| s.name == name)
}

fn stalled_message(r: &Release) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Runbook 2.3 and 2.4 failing: a migration that fails after the config it
/// was released with was changed. The rollback restores the backed-up
/// ConfigMap and Secret byte for byte, runs the down-migration with the NEW
/// image, and traffic never leaves the old version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_restores_config_and_rolls_the_schema_back() {
    let (ns, _operator, api) = setup("migfail").await;
    let original = create_config_map(
        &ns,
        "shop-settings",
        json!({"mode": "classic", "limit": "10"}),
    )
    .await;
    let original_secret = create_secret(&ns, "shop-db", "s3cret").await;
    let data_safe = |migrate_labels: Value| {
        json!({
            "backup": {"configMaps": ["shop-settings"], "secrets": ["shop-db"]},
            "config": {"configMaps": [{"name": "shop-config", "data": {"greeting": "hello"}}]},
            "migration": {
                "job": job(migrate_labels, "migrate"),
                "rollback": job(json!({}), "migrate-down"),
            },
            "workload": {"template": {"spec": {
                "containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "shop-config"}}]}],
                "volumes": [{"name": "config", "configMap": {"name": "shop-config"}}]
            }}},
        })
    };
    let mut v1 = release("v1", blue_green("1s"), data_safe(json!({})));
    // The merge replaced the container list: give the app its image back.
    v1["spec"]["workload"]["template"]["spec"]["containers"][0]["image"] = json!("shop:v1");
    apply(&api, &v1).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;

    // The revision's pods mount the revision's immutable config copy.
    let blue = ns
        .api::<Deployment>()
        .get("shop-blue")
        .await
        .unwrap_or_else(|e| panic!("reading shop-blue: {e}"));
    let pod = blue.spec.template.spec.unwrap_or_default();
    let volume = pod.volumes.unwrap_or_default();
    assert_eq!(
        volume[0].config_map.as_ref().map(|c| c.name.as_str()),
        Some("shop-config-r1")
    );
    let env_from = pod.containers[0].env_from.clone().unwrap_or_default();
    assert_eq!(
        env_from[0].config_map_ref.as_ref().map(|c| c.name.as_str()),
        Some("shop-config-r1")
    );
    let copy = ns
        .api::<ConfigMap>()
        .get("shop-config-r1")
        .await
        .unwrap_or_else(|e| panic!("reading shop-config-r1: {e}"));
    assert_eq!(copy.immutable, Some(true));

    let mut v2 = release(
        "v2",
        blue_green("1s"),
        data_safe(json!({BEHAVIOR_LABEL: HOLD})),
    );
    v2["spec"]["workload"]["template"]["spec"]["containers"][0]["image"] = json!("shop:v2");
    apply(&api, &v2).await;
    wait_for(&api, "shop", LONG, |r: &Release| {
        r.status.as_ref().is_some_and(|s| s.revision == Some(2))
            && step(r, "Migrate").is_some_and(|s| s.state == StepState::Running)
    })
    .await;
    // While the migration runs, what it changes outside the release changes.
    let cms = ns.api::<ConfigMap>();
    cms.patch(
        "shop-settings",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"mode": "new-checkout", "limit": null}, "binaryData": {"blob": "/w=="}})),
    )
    .await
    .unwrap_or_else(|e| panic!("changing shop-settings: {e}"));
    ns.api::<Secret>()
        .patch(
            "shop-db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"password": "changed", "extra": "x"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("changing shop-db: {e}"));
    let failed_at = Instant::now();
    fail_job_pod(&ns, "shop-migrate-r2").await;

    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    println!(
        "migration failed → RolledBack in {:.2}s",
        failed_at.elapsed().as_secs_f64()
    );
    let restored = cms
        .get("shop-settings")
        .await
        .unwrap_or_else(|e| panic!("reading shop-settings: {e}"));
    assert_eq!(restored.data, original.data, "ConfigMap data restored");
    assert_eq!(
        restored.binary_data, original.binary_data,
        "ConfigMap binaryData restored"
    );
    let secret = ns
        .api::<Secret>()
        .get("shop-db")
        .await
        .unwrap_or_else(|e| panic!("reading shop-db: {e}"));
    assert_eq!(secret.data, original_secret.data, "Secret restored");

    let rollback = ns
        .api::<Job>()
        .get("shop-migrate-rollback-r2")
        .await
        .unwrap_or_else(|e| panic!("the migration rollback Job: {e}"));
    let image = rollback
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone().unwrap_or_default());
    assert_eq!(
        image.as_deref(),
        Some("shop:v2"),
        "the down-migration runs the new image"
    );

    // Traffic never moved: the new color was never even created.
    assert!(
        ns.api::<Deployment>()
            .get_opt("shop-green")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "no Deployment for a revision whose migration failed"
    );
    let status = r.status.clone().unwrap_or_default();
    let steps: Vec<(String, StepState)> = status
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.state))
        .collect();
    println!("steps: {steps:?}");
    for undo in ["RollBackTraffic", "RollBackMigration", "RestoreConfig"] {
        assert!(
            steps.contains(&(undo.to_owned(), StepState::Succeeded)),
            "{undo} in {steps:?}"
        );
    }
    let migrate = step(&r, "Migrate").map(|s| s.message.clone().unwrap_or_default());
    assert!(
        migrate
            .as_deref()
            .is_some_and(|m| m.contains("failed by e2e.lockkeeper.dev/behavior=fail")),
        "the failed pod's message is in the step: {migrate:?}"
    );
    let undone = &status.history[0].undone;
    println!("undone: {undone:?}");
    assert!(
        undone
            .iter()
            .any(|u| u.contains("rolled back by shop-migrate-rollback-r2"))
    );
    assert!(
        undone
            .iter()
            .any(|u| u.contains("restored ConfigMap shop-settings, Secret shop-db"))
    );
    let blue = ns
        .api::<k8s_openapi::api::core::v1::Service>()
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crate::runbook::selected_color(&blue).as_deref(),
        Some("blue")
    );
    ns.cleanup().await;
}

/// A migration without a rollback: the condition says plainly what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_without_rollback_says_the_schema_is_left_migrated() {
    let (ns, _operator, api) = setup("migleft").await;
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    let extra = json!({"migration": {"job": job(json!({BEHAVIOR_LABEL: FAIL}), "migrate")}});
    apply(&api, &release("v2", blue_green("1s"), extra)).await;
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    let message = stalled_message(&r);
    println!("{message}");
    assert!(
        message.contains("database left at revision 2's schema: no migration rollback defined"),
        "{message}"
    );
    ns.cleanup().await;
}

/// A config check that fails stops the revision before anything runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_config_check_fails_before_deploy() {
    let (ns, _operator, api) = setup("cfgcheck").await;
    let extra = json!({"config": {
        "configMaps": [{"name": "shop-config", "data": {"a": "1"}}],
        "check": {"command": ["app", "--check-config"]}
    }});
    let mut bad = extra.clone();
    bad["workload"] =
        json!({"template": {"metadata": {"labels": {"app": "shop", BEHAVIOR_LABEL: FAIL}}}});
    apply(&api, &release("v1", blue_green("1s"), bad)).await;
    let r = wait_phase(&api, 1, Phase::Failed, LONG).await;
    let message = stalled_message(&r);
    assert!(message.contains("config check Job"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(
        ns.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items
            .is_empty(),
        "nothing deployed"
    );
    apply(&api, &release("v2", blue_green("1s"), extra)).await;
    let r = wait_phase(&api, 2, Phase::Ready, LONG).await;
    let config = step(&r, "Config").and_then(|s| s.message.clone());
    assert!(
        config
            .as_deref()
            .is_some_and(|m| m.contains("config check passed")),
        "{config:?}"
    );
    ns.cleanup().await;
}

/// Things the backup needs that are not there fail the revision before it
/// changes anything, naming them; the running version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_backup_sources_fail_before_any_change() {
    let (ns, _operator, api) = setup("badbackup").await;
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    let cases = [
        (json!({"configMaps": ["nope-cm"]}), "ConfigMap"),
        (json!({"secrets": ["nope-secret"]}), "Secret"),
        (
            json!({"volumes": [{"persistentVolumeClaim": "nope-claim"}]}),
            "PersistentVolumeClaim",
        ),
    ];
    for (i, (backup, kind)) in cases.into_iter().enumerate() {
        let revision = i as i64 + 2;
        let name = backup.to_string();
        apply(
            &api,
            &release(
                &format!("v{revision}"),
                blue_green("1s"),
                json!({"backup": backup}),
            ),
        )
        .await;
        let r = wait_phase(&api, revision, Phase::Failed, LONG).await;
        let message = stalled_message(&r);
        println!("{kind}: {message}");
        assert!(message.contains(kind), "{name}: {message}");
        assert!(message.contains("does not exist"), "{name}: {message}");
        assert!(message.contains("nothing was changed"), "{name}: {message}");
        let svc = ns
            .api::<k8s_openapi::api::core::v1::Service>()
            .get("shop")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            crate::runbook::selected_color(&svc).as_deref(),
            Some("blue")
        );
    }
    assert!(
        ns.api::<Deployment>()
            .get_opt("shop-green")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "no revision got as far as deploying"
    );
    ns.cleanup().await;
}

/// Runbook 4.3: with `keep: 3`, after six revisions exactly the backups and
/// config copies of the last three remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_backups_of_the_last_revisions() {
    let (_crds, ns, _operator, api, class, _double) = with_snapshots("retain").await;
    create_pvc(ns.name(), "shop-data", "1Gi", None).await;
    create_config_map(&ns, "shop-settings", json!({"mode": "classic"})).await;
    create_secret(&ns, "shop-db", "s3cret").await;
    for revision in 1..=6 {
        let extra = json!({
            "backup": {"configMaps": ["shop-settings"], "secrets": ["shop-db"], "keep": 3,
                       "volumes": [{"persistentVolumeClaim": "shop-data", "volumeSnapshotClassName": class}]},
            "config": {"configMaps": [{"name": "shop-config", "data": {"rev": revision.to_string()}}]},
        });
        apply(
            &api,
            &release(&format!("v{revision}"), blue_green("0s"), extra),
        )
        .await;
        wait_phase(&api, revision, Phase::Ready, LONG).await;
    }
    let revisions_of = |items: Vec<(String, BTreeMap<String, String>)>, role: &str| {
        items
            .into_iter()
            .filter(|(_, l)| l.get("lockkeeper.dev/role").map(String::as_str) == Some(role))
            .filter_map(|(_, l)| l.get("lockkeeper.dev/revision").cloned())
            .collect::<BTreeSet<String>>()
    };
    let cms: Vec<(String, BTreeMap<String, String>)> = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("lockkeeper.dev/release=shop"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .map(|c| (c.name_any(), c.labels().clone()))
        .collect();
    let want: BTreeSet<String> = ["4", "5", "6"].map(String::from).into();
    assert_eq!(
        revisions_of(cms.clone(), "backup"),
        want,
        "backup copies: {cms:?}"
    );
    assert_eq!(
        revisions_of(cms.clone(), "config"),
        want,
        "config copies: {cms:?}"
    );
    let secrets: Vec<(String, BTreeMap<String, String>)> = ns
        .api::<Secret>()
        .list(&ListParams::default().labels("lockkeeper.dev/release=shop"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .map(|c| (c.name_any(), c.labels().clone()))
        .collect();
    assert_eq!(revisions_of(secrets, "backup"), want);
    let snapshots: Vec<(String, BTreeMap<String, String>)> =
        crate::support::volume_snapshots(ns.client(), ns.name())
            .list(&ListParams::default().labels("lockkeeper.dev/release=shop"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items
            .into_iter()
            .map(|c| (c.name_any(), c.labels().clone()))
            .collect();
    assert_eq!(
        revisions_of(snapshots.clone(), "backup"),
        want,
        "VolumeSnapshots: {snapshots:?}"
    );
    let r = api.get("shop").await.unwrap_or_else(|e| panic!("{e}"));
    let recorded: Vec<i64> = r
        .status
        .unwrap_or_default()
        .backups
        .iter()
        .map(|b| b.revision)
        .collect();
    assert_eq!(recorded, [6, 5, 4]);
    println!(
        "after 6 revisions with keep 3: backups of revisions {want:?} remain ({} ConfigMaps incl. the deployment log, {} VolumeSnapshots)",
        cms.len(),
        snapshots.len()
    );
    ns.cleanup().await;
}

/// Exactly once: the operator is killed at random points while many
/// migrations run; every revision still has exactly one migration Job,
/// created once (one uid, seen added once by a watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_migration_runs_exactly_once_across_operator_kills() {
    crate::support::install_crds().await;
    let ns = TestNamespace::new("exactlyonce").await;
    let mut operator = Operator::for_namespace(ns.name()).await;
    let api = ns.api::<Release>();
    let releases: i64 = std::env::var("LOCKKEEPER_MIGRATION_RELEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let revisions: i64 = 5;

    let jobs = ns.api::<Job>();
    let watch = watcher(
        jobs.clone(),
        watcher::Config::default().labels("lockkeeper.dev/job=migrate"),
    )
    .applied_objects();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(
        BTreeMap::<String, BTreeSet<String>>::new(),
    ));
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut watch = std::pin::pin!(watch);
            while let Some(Ok(job)) = watch.next().await {
                if let Ok(mut seen) = seen.lock() {
                    seen.entry(job.name_any())
                        .or_default()
                        .insert(job.uid().unwrap_or_default());
                }
            }
        })
    };

    let started = Instant::now();
    let mut kills = 0;
    for revision in 1..=revisions {
        for i in 0..releases {
            let mut manifest = release(
                &format!("v{revision}"),
                json!({"type": "Recreate"}),
                json!({
                    "workload": {"replicas": 1},
                    "migration": {"job": job(json!({}), "migrate")},
                }),
            );
            manifest["metadata"]["name"] = json!(format!("shop-{i}"));
            apply(&api, &manifest).await;
        }
        // Kill the operator at random points until every release of this
        // round is Ready.
        let deadline = Instant::now() + LONG * 2;
        loop {
            let ready = api
                .list(&ListParams::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items
                .iter()
                .filter(|r| {
                    r.status.as_ref().is_some_and(|s| {
                        s.revision == Some(revision) && s.phase == Some(Phase::Ready)
                    })
                })
                .count() as i64;
            if ready == releases {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {revision}: {ready}/{releases} Ready"
            );
            let pause = rand::rng().random_range(200..1500);
            tokio::time::sleep(Duration::from_millis(pause)).await; // a random crash point, not a wait
            operator.restart();
            kills += 1;
        }
    }
    // Let the watch catch up, then count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    recorder.abort();
    let all = jobs
        .list(&ListParams::default().labels("lockkeeper.dev/job=migrate"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut per_revision: BTreeMap<(String, String), usize> = BTreeMap::new();
    for j in &all.items {
        let labels = j.labels();
        let key = (
            labels
                .get("lockkeeper.dev/release")
                .cloned()
                .unwrap_or_default(),
            labels
                .get("lockkeeper.dev/revision")
                .cloned()
                .unwrap_or_default(),
        );
        *per_revision.entry(key).or_default() += 1;
    }
    let migrations = releases * revisions;
    assert_eq!(per_revision.len() as i64, migrations, "{per_revision:?}");
    assert!(per_revision.values().all(|n| *n == 1), "{per_revision:?}");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen.len() as i64,
        migrations,
        "every migration Job was seen"
    );
    let recreated: Vec<_> = seen.iter().filter(|(_, uids)| uids.len() != 1).collect();
    assert!(
        recreated.is_empty(),
        "Jobs created more than once: {recreated:?}"
    );
    println!(
        "{migrations} migrations ({releases} releases x {revisions} revisions), operator killed {kills} times in {:.1}s: exactly one migration Job per revision, each created once",
        started.elapsed().as_secs_f64()
    );
    ns.cleanup().await;
}

/// A namespace with an operator, the VolumeSnapshot API, a snapshot class
/// of its own and the (test double) CSI snapshotter and provisioner.
async fn with_snapshots(
    prefix: &str,
) -> (
    crate::support::SnapshotCrdsGuard,
    TestNamespace,
    Operator,
    kube::Api<Release>,
    String,
    SnapshotDouble,
) {
    let crds = snapshot_crds_present().await;
    let (ns, operator, api) = setup(prefix).await;
    let class = format!("lk-{}", ns.name());
    create_snapshot_class(&class, false).await;
    let double = SnapshotDouble::start(ns.name()).await;
    (crds, ns, operator, api, class, double)
}

/// A volume-backed release: a claim mounted by the pods, backed up with a
/// VolumeSnapshot of a named class, restored on rollback when opted in.
fn with_volume(class: &str, extra: Value) -> Value {
    let mut spec = json!({
        "backup": {
            "configMaps": ["shop-settings"],
            "volumes": [{"persistentVolumeClaim": "shop-data", "volumeSnapshotClassName": class}],
        },
        "migration": {"job": job(json!({}), "migrate"), "rollback": job(json!({}), "migrate-down")},
        "rollback": {"restoreVolumes": true},
        "workload": {"template": {"spec": {
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shop-data"}}]
        }}},
    });
    crate::runbook::merge(&mut spec, extra);
    spec
}

/// A revision that fails after its cutover: traffic back on the old color,
/// the ConfigMap restored, the migration rolled back, and (opted in) the
/// claim restored from the snapshot taken before the revision, with the
/// old color pointed at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_cutover_restores_traffic_config_schema_and_volume() {
    let (_crds, ns, _operator, api, class, double) = with_snapshots("restorevol").await;
    create_pvc(ns.name(), "shop-data", "1Gi", None).await;
    let original = create_config_map(&ns, "shop-settings", json!({"mode": "classic"})).await;

    apply(
        &api,
        &release("v1", blue_green("5m"), with_volume(&class, json!({}))),
    )
    .await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    apply(
        &api,
        &release("v2", blue_green("5m"), with_volume(&class, json!({}))),
    )
    .await;
    // v2 serves (cut over, old color kept warm); then something is wrong.
    wait_phase(&api, 2, Phase::Observing, LONG).await;
    ns.api::<ConfigMap>()
        .patch(
            "shop-settings",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"mode": "new"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("changing shop-settings: {e}"));
    let aborted = Instant::now();
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": {"lockkeeper.dev/abort": "2"}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("requesting the abort: {e}"));
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    println!(
        "abort after cutover → RolledBack with the volume restored in {:.2}s",
        aborted.elapsed().as_secs_f64()
    );
    let status = r.status.clone().unwrap_or_default();
    let undone = &status.history[0].undone;
    println!("undone: {undone:#?}");

    let svc = ns
        .api::<k8s_openapi::api::core::v1::Service>()
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crate::runbook::selected_color(&svc).as_deref(),
        Some("blue"),
        "traffic back"
    );
    let cm = ns
        .api::<ConfigMap>()
        .get("shop-settings")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cm.data, original.data, "config restored");
    assert!(
        ns.api::<Job>()
            .get_opt("shop-migrate-rollback-r2")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some(),
        "the migration was rolled back"
    );
    let restored = "shop-data-restored-r2";
    assert_eq!(
        status.restored_claims.get("shop-data").map(String::as_str),
        Some(restored)
    );
    let claim = ns
        .api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>()
        .get(restored)
        .await
        .unwrap_or_else(|e| panic!("reading the restored claim: {e}"));
    let source = claim
        .spec
        .and_then(|s| s.data_source)
        .map(|d| (d.kind, d.name));
    assert_eq!(
        source,
        Some(("VolumeSnapshot".to_owned(), "shop-shop-data-r2".to_owned()))
    );
    assert_eq!(
        double.restored_claims().get(restored).map(String::as_str),
        Some("shop-shop-data-r2"),
        "the (double) provisioner filled the claim from the snapshot"
    );
    let blue = ns
        .api::<Deployment>()
        .get("shop-blue")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let claims: Vec<String> = blue
        .spec
        .template
        .spec
        .and_then(|p| p.volumes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
        .collect();
    assert_eq!(
        claims,
        [restored],
        "the old color mounts the restored claim"
    );
    for what in [
        "traffic back on blue",
        "rolled back by shop-migrate-rollback-r2",
        "restored ConfigMap shop-settings",
        "blue now mounts shop-data-restored-r2 (in place of shop-data)",
    ] {
        assert!(
            undone.iter().any(|u| u.contains(what)),
            "{what} in {undone:?}"
        );
    }
    ns.cleanup().await;
}

/// Snapshot problems fail the revision before anything changes, naming
/// what failed: a snapshot the (double) CSI driver fails, a class that does
/// not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_problems_fail_before_any_change() {
    let (_crds, ns, _operator, api, class, _double) = with_snapshots("badsnap").await;
    create_pvc(
        ns.name(),
        "shop-data",
        "1Gi",
        Some("fail:the disk is on fire"),
    )
    .await;
    create_config_map(&ns, "shop-settings", json!({"mode": "classic"})).await;
    let cases = [
        (
            class.clone(),
            "VolumeSnapshot shop-shop-data-r1 of claim shop-data failed: the disk is on fire",
        ),
        (
            "no-such-class".to_owned(),
            "VolumeSnapshotClass no-such-class (spec.backup.volumes) does not exist",
        ),
    ];
    for (i, (class, expected)) in cases.into_iter().enumerate() {
        let revision = i as i64 + 1;
        apply(
            &api,
            &release(
                &format!("v{revision}"),
                blue_green("1s"),
                with_volume(&class, json!({})),
            ),
        )
        .await;
        let r = wait_phase(&api, revision, Phase::Failed, LONG).await;
        let message = stalled_message(&r);
        println!("{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
    }
    assert!(
        ns.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items
            .is_empty()
    );
    ns.cleanup().await;
}

/// Without the VolumeSnapshot API in the cluster, a release that asks for
/// volume backups fails before any change and says what to install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_backups_without_the_snapshot_api_fail_before_any_change() {
    let _crds = snapshot_crds_absent().await;
    let (ns, _operator, api) = setup("nosnapapi").await;
    create_pvc(ns.name(), "shop-data", "1Gi", None).await;
    create_config_map(&ns, "shop-settings", json!({"mode": "classic"})).await;
    apply(
        &api,
        &release("v1", blue_green("1s"), with_volume("any", json!({}))),
    )
    .await;
    let r = wait_phase(&api, 1, Phase::Failed, LONG).await;
    let message = stalled_message(&r);
    println!("{message}");
    assert!(
        message.contains("the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed"),
        "{message}"
    );
    ns.cleanup().await;
}
