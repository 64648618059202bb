//! The runbook engine on the real control plane: blue/green and Recreate
//! revisions, traffic rollback, requests, bad input, and crash safety.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, Deployment},
    core::v1::Service,
    events::v1::Event,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use lockkeeper::api::{Phase, Release};
use rand::Rng;
use serde_json::{Value, json};

use crate::support::{
    BEHAVIOR_LABEL, NEVER_READY, Operator, TestNamespace, events_about, install_crds, poll_until,
    wait_for,
};

pub const LONG: Duration = Duration::from_secs(90);

/// A Release manifest; `extra` is merged over the base spec.
pub fn release(version: &str, strategy: Value, extra: Value) -> Value {
    let mut spec = json!({
        "version": version,
        "workload": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "app", "image": format!("shop:{version}")}]}
            }
        },
        "strategy": strategy,
    });
    merge(&mut spec, extra);
    json!({"apiVersion": "lockkeeper.dev/v1alpha1", "kind": "Release", "metadata": {"name": "shop"}, "spec": spec})
}

pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

pub fn blue_green(delay: &str) -> Value {
    json!({"type": "BlueGreen", "blueGreen": {"activeService": "shop", "previewService": "shop-preview", "scaleDownDelay": delay}})
}

fn recreate() -> Value {
    json!({"type": "Recreate", "recreate": {"service": "shop"}})
}

fn never_ready(deadline: &str) -> Value {
    json!({"workload": {"progressDeadline": deadline, "template": {"metadata": {"labels": {"app": "shop", BEHAVIOR_LABEL: NEVER_READY}}}}})
}

/// Applies a manifest the way `kubectl apply --server-side` does.
pub async fn apply(api: &Api<Release>, manifest: &Value) {
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or("shop")
        .to_owned();
    api.patch(
        &name,
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap_or_else(|e| panic!("applying Release {name}: {e}"));
}

/// Creates a Service without a selector: the release owns the selector.
pub async fn service(ns: &TestNamespace, name: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap_or_else(|e| panic!("service manifest: {e}"));
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_or_else(|e| panic!("creating Service {name}: {e}"));
}

/// Waits until the Release's revision `revision` reaches `phase`.
pub async fn wait_phase(
    api: &Api<Release>,
    revision: i64,
    phase: Phase,
    timeout: Duration,
) -> Release {
    wait_for(api, "shop", timeout, |r: &Release| {
        r.status
            .as_ref()
            .is_some_and(|s| s.revision == Some(revision) && s.phase == Some(phase))
    })
    .await
}

pub fn selected_color(svc: &Service) -> Option<String> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()?
        .get("lockkeeper.dev/color")
        .cloned()
}

async fn color_of(ns: &TestNamespace, service: &str) -> Option<String> {
    let svc = ns
        .api::<Service>()
        .get(service)
        .await
        .unwrap_or_else(|e| panic!("reading Service {service}: {e}"));
    selected_color(&svc)
}

async fn replicas(ns: &TestNamespace, color: &str) -> Option<i32> {
    ns.api::<Deployment>()
        .get_opt(&format!("shop-{color}"))
        .await
        .ok()
        .flatten()
        .and_then(|d| d.spec.replicas)
}

pub async fn setup(prefix: &str) -> (TestNamespace, Operator, Api<Release>) {
    install_crds().await;
    let ns = TestNamespace::new(prefix).await;
    service(&ns, "shop").await;
    service(&ns, "shop-preview").await;
    let operator = Operator::for_namespace(ns.name()).await;
    let api = ns.api::<Release>();
    (ns, operator, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_revisions_switch_traffic_and_scale_the_old_color_down() {
    let (ns, _operator, api) = setup("bluegreen").await;
    let expected = [("v1", "blue"), ("v2", "green"), ("v3", "blue")];
    for (i, (version, color)) in expected.iter().enumerate() {
        let revision = i as i64 + 1;
        let started = Instant::now();
        apply(&api, &release(version, blue_green("1s"), json!({}))).await;
        let r = wait_phase(&api, revision, Phase::Ready, LONG).await;
        println!(
            "{version}: Ready in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        let status = r.status.unwrap_or_default();
        assert_eq!(
            status
                .active_color
                .map(|c| c.as_str().to_owned())
                .as_deref(),
            Some(*color)
        );
        assert_eq!(
            color_of(&ns, "shop").await.as_deref(),
            Some(*color),
            "active Service on {color}"
        );
        assert_eq!(replicas(&ns, color).await, Some(2));
        if revision > 1 {
            let old = if *color == "blue" { "green" } else { "blue" };
            assert_eq!(
                replicas(&ns, old).await,
                Some(0),
                "old color {old} scaled down after the delay"
            );
        }
        let history = status.history;
        assert_eq!(history.len(), revision as usize);
        assert_eq!(history[0].version, *version);
    }
    let records = ns
        .api::<ControllerRevision>()
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(records.items.len(), 3, "one revision record per revision");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_revisions_stop_the_old_version_before_starting_the_new() {
    let (ns, _operator, api) = setup("recreate").await;
    for (i, version) in ["v1", "v2", "v3"].iter().enumerate() {
        let revision = i as i64 + 1;
        apply(&api, &release(version, recreate(), json!({}))).await;
        let r = wait_phase(&api, revision, Phase::Ready, LONG).await;
        let status = r.status.unwrap_or_default();
        let color = status
            .active_color
            .map(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(color_of(&ns, "shop").await.as_deref(), Some(color.as_str()));
        assert_eq!(replicas(&ns, &color).await, Some(2));
        let stop = status
            .steps
            .iter()
            .find(|s| s.name == "Stop")
            .map(|s| s.message.clone().unwrap_or_default());
        if revision > 1 {
            let old = if color == "blue" { "green" } else { "blue" };
            assert_eq!(replicas(&ns, old).await, Some(0));
            assert_eq!(stop.as_deref(), Some(format!("{old} stopped").as_str()));
            // The Stop step ended before the Deploy step began.
            let finished = |name: &str| {
                status
                    .steps
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.finished_at.clone())
            };
            let started = |name: &str| {
                status
                    .steps
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.started_at.clone())
            };
            assert!(finished("Stop") <= started("Deploy"), "{:?}", status.steps);
        }
    }
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_never_becomes_ready_rolls_back_without_moving_traffic() {
    let (ns, _operator, api) = setup("neverready").await;
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;

    apply(&api, &release("v2", blue_green("1s"), never_ready("3s"))).await;
    let watch_service = {
        let api = ns.api::<Service>();
        tokio::spawn(async move {
            // Traffic must stay on blue for the whole failed revision.
            crate::support::assert_stays(&api, "shop", Duration::from_secs(8), |s| {
                selected_color(s).as_deref() == Some("blue")
            })
            .await
        })
    };
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    watch_service
        .await
        .unwrap_or_else(|e| panic!("service watch: {e}"));
    let status = r.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
        .unwrap_or_else(|| panic!("no Ready condition"));
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "RolledBack");
    assert!(
        ready.message.contains("did not become available"),
        "{}",
        ready.message
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    assert_eq!(
        replicas(&ns, "green").await,
        Some(0),
        "the failed color is scaled down"
    );
    assert_eq!(color_of(&ns, "shop").await.as_deref(), Some("blue"));
    let undone = &status.history[0].undone;
    assert!(
        undone.iter().any(|u| u.contains("traffic never left blue")),
        "{undone:?}"
    );
    let events = poll_until("a RolledBack event", Duration::from_secs(10), || async {
        let events = events_about(&ns.api::<Event>(), "Release", "shop").await?;
        events
            .iter()
            .any(|e| e.reason == "RolledBack")
            .then_some(events.clone())
            .ok_or(format!("{events:?}"))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "RollingBack" && e.type_ == "Warning")
    );

    // RolledBack is terminal until a retry names the revision.
    crate::support::assert_stays(&api, "shop", Duration::from_secs(2), |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.revision == Some(2) && s.phase == Some(Phase::RolledBack))
    })
    .await;
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"lockkeeper.dev/retry": "2"}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("requesting a retry: {e}"));
    wait_phase(&api, 3, Phase::RolledBack, LONG).await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_cutover_switches_traffic_back_to_the_running_old_color() {
    let (ns, _operator, api) = setup("abort").await;
    apply(&api, &release("v1", blue_green("10m"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    apply(&api, &release("v2", blue_green("10m"), json!({}))).await;
    wait_phase(&api, 2, Phase::Observing, LONG).await;
    assert_eq!(color_of(&ns, "shop").await.as_deref(), Some("green"));
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"lockkeeper.dev/abort": "2"}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("requesting an abort: {e}"));
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    assert_eq!(color_of(&ns, "shop").await.as_deref(), Some("blue"));
    assert_eq!(replicas(&ns, "green").await, Some(0));
    let status = r.status.unwrap_or_default();
    assert_eq!(status.active_color.map(|c| c.as_str()), Some("blue"));
    assert!(
        status.history[0]
            .undone
            .iter()
            .any(|u| u.contains("traffic back on blue")),
        "{:?}",
        status.history[0]
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_cutover_waits_for_a_promote_naming_the_revision() {
    let (ns, _operator, api) = setup("promote").await;
    let manual = json!({"type": "BlueGreen", "blueGreen": {"activeService": "shop", "previewService": "shop-preview", "autoCutover": false, "scaleDownDelay": "1s"}});
    apply(&api, &release("v1", manual.clone(), json!({}))).await;
    wait_phase(&api, 1, Phase::CuttingOver, LONG).await;
    assert_eq!(
        color_of(&ns, "shop-preview").await.as_deref(),
        Some("blue"),
        "preview points at the new color"
    );
    assert_eq!(
        color_of(&ns, "shop").await,
        None,
        "no traffic before the promote"
    );
    let promote = |rev: &str| json!({"metadata": {"annotations": {"lockkeeper.dev/promote": rev}}});
    api.patch("shop", &PatchParams::default(), &Patch::Merge(promote("0")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    crate::support::assert_stays(&api, "shop", Duration::from_secs(2), |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::CuttingOver))
    })
    .await;
    api.patch("shop", &PatchParams::default(), &Patch::Merge(promote("1")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    assert_eq!(color_of(&ns, "shop").await.as_deref(), Some("blue"));
    poll_until(
        "a PromoteRequested event",
        Duration::from_secs(10),
        || async {
            let events = events_about(&ns.api::<Event>(), "Release", "shop").await?;
            events
                .iter()
                .any(|e| e.reason == "PromoteRequested")
                .then_some(())
                .ok_or(format!("{events:?}"))
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_foreign_service_stalls_before_anything_changes() {
    install_crds().await;
    let ns = TestNamespace::new("badsvc").await;
    let _operator = Operator::for_namespace(ns.name()).await;
    let api = ns.api::<Release>();
    apply(
        &api,
        &release(
            "v1",
            json!({"type": "BlueGreen", "blueGreen": {"activeService": "shop"}}),
            json!({}),
        ),
    )
    .await;
    let r = wait_for(&api, "shop", LONG, |r: &Release| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.reason == "ServiceMissing")
        })
    })
    .await;
    assert!(
        r.status.as_ref().is_some_and(|s| s.revision.is_none()),
        "no revision started"
    );
    assert!(
        ns.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    );
    // The Service appears: the release starts by itself.
    service(&ns, "shop").await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;

    // A second release steering a Service whose selector someone else set.
    let foreign: Service = serde_json::from_value(json!({
        "metadata": {"name": "other"},
        "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    ns.api::<Service>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut other = release(
        "v1",
        json!({"type": "BlueGreen", "blueGreen": {"activeService": "other"}}),
        json!({}),
    );
    other["metadata"]["name"] = json!("other");
    apply(&api, &other).await;
    let r = wait_for(&api, "other", LONG, |r: &Release| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.reason == "ServiceUnsteerable")
        })
    })
    .await;
    let message = r
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(message.contains("app"), "{message}");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_deployment_is_restored_and_reported() {
    let (ns, _operator, api) = setup("drift").await;
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    ns.api::<Deployment>()
        .patch(
            "shop-blue",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap_or_else(|e| panic!("editing the Deployment by hand: {e}"));
    wait_for(
        &ns.api::<Deployment>(),
        "shop-blue",
        LONG,
        |d: &Deployment| d.spec.replicas == Some(2),
    )
    .await;
    poll_until("a Drift event", Duration::from_secs(20), || async {
        let events = events_about(&ns.api::<Event>(), "Release", "shop").await?;
        events
            .iter()
            .any(|e| e.reason == "Drift" && e.type_ == "Warning")
            .then_some(())
            .ok_or(format!("{events:?}"))
    })
    .await;
    ns.cleanup().await;
}

/// Kills the operator at random points of many releases and checks that
/// every revision ends terminal with each step's effect applied once: one
/// revision record per revision, consecutive revision numbers, one history
/// entry each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_random_points_never_repeat_or_lose_a_step() {
    let (ns, mut operator, api) = setup("crash").await;
    let runs = std::env::var("LOCKKEEPER_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut kills = 0;
    for run in 1..=runs {
        let version = format!("v{run}");
        let failing = run % 5 == 0;
        let extra = if failing {
            never_ready("2s")
        } else {
            json!({})
        };
        apply(&api, &release(&version, blue_green("500ms"), extra)).await;
        let delay = rand::rng().random_range(0..1500);
        tokio::time::sleep(Duration::from_millis(delay)).await; // a random crash point, not a wait
        operator.restart();
        kills += 1;
        let want = if failing {
            Phase::RolledBack
        } else {
            Phase::Ready
        };
        wait_phase(&api, run, want, LONG).await;
    }
    let r = api.get("shop").await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status.unwrap_or_default();
    assert_eq!(status.revision, Some(runs));
    // One record per revision, those beyond the history (10) cleaned up.
    let kept: Vec<i64> = ((runs - 9).max(1)..=runs).collect();
    poll_until("one record per revision in the history", LONG, || async {
        let records = ns
            .api::<ControllerRevision>()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut revisions: Vec<i64> = records.items.iter().filter_map(|r| r.revision).collect();
        revisions.sort_unstable();
        if revisions == kept {
            Ok(())
        } else {
            Err(format!("{revisions:?}"))
        }
    })
    .await;
    let history: Vec<i64> = status.history.iter().map(|h| h.revision).collect();
    let expected: Vec<i64> = (1..=runs).rev().take(10).collect();
    assert_eq!(
        history, expected,
        "one history entry per revision, newest first"
    );
    println!(
        "{runs} releases, operator killed {kills} times at random points: all terminal, no step repeated"
    );
    ns.cleanup().await;
}

/// Sums every sample of `metric` in the operator's /metrics text.
pub async fn metric_sum(operator: &Operator, metric: &str) -> f64 {
    let body = reqwest::get(format!("{}/metrics", operator.metrics_url()))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("reading operator metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading operator metrics: {e}"));
    body.lines()
        .filter(|l| {
            l.starts_with(metric)
                && (l[metric.len()..].starts_with('{') || l[metric.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Benchmark (`make bench`): the time from a rollback request to the active
/// Service selecting the old color again, over repeated aborts after
/// cutover, and the API writes of one full blue/green release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with make bench"]
async fn bench_rollback_traffic_latency() {
    let (ns, operator, api) = setup("bench-rollback").await;
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;

    let writes_before = metric_sum(&operator, "lockkeeper_api_writes_total").await;
    apply(&api, &release("v2", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 2, Phase::Ready, LONG).await;
    // Let the last status write and its events land before counting.
    poll_until(
        "the write count to settle",
        Duration::from_secs(10),
        || async {
            let a = metric_sum(&operator, "lockkeeper_api_writes_total").await;
            tokio::time::sleep(Duration::from_millis(500)).await; // sampling interval of the settle check
            let b = metric_sum(&operator, "lockkeeper_api_writes_total").await;
            if a == b {
                Ok(b)
            } else {
                Err(format!("{a} -> {b}"))
            }
        },
    )
    .await;
    let writes = metric_sum(&operator, "lockkeeper_api_writes_total").await - writes_before;

    let runs = 20;
    let services = ns.api::<Service>();
    let mut end_to_end = Vec::new();
    for run in 0..runs {
        let revision = 3 + run;
        apply(
            &api,
            &release(&format!("v{revision}"), blue_green("10m"), json!({})),
        )
        .await;
        let r = wait_phase(&api, revision, Phase::Observing, LONG).await;
        let new = r
            .status
            .and_then(|s| s.target_color)
            .map(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        let old = if new == "blue" { "green" } else { "blue" };
        let watch = {
            let services = services.clone();
            let old = old.to_owned();
            tokio::spawn(async move {
                wait_for(&services, "shop", LONG, move |s: &Service| {
                    selected_color(s).as_deref() == Some(old.as_str())
                })
                .await;
                Instant::now()
            })
        };
        let requested = Instant::now();
        api.patch("shop", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"lockkeeper.dev/abort": revision.to_string()}}})))
            .await
            .unwrap_or_else(|e| panic!("requesting an abort: {e}"));
        let switched = watch.await.unwrap_or_else(|e| panic!("service watch: {e}"));
        end_to_end.push(switched.duration_since(requested).as_secs_f64() * 1000.0);
        wait_phase(&api, revision, Phase::RolledBack, LONG).await;
    }
    end_to_end.sort_by(f64::total_cmp);
    let count = metric_sum(
        &operator,
        "lockkeeper_traffic_switch_seconds_count{direction=\"back\"}",
    )
    .await;
    let sum = metric_sum(
        &operator,
        "lockkeeper_traffic_switch_seconds_sum{direction=\"back\"}",
    )
    .await;
    println!("rollback traffic benchmark over {runs} aborts after cutover:");
    println!(
        "  abort request -> active Service on the old color (end to end, includes watch delivery): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&end_to_end, 50.0),
        percentile(&end_to_end, 99.0),
        end_to_end.last().copied().unwrap_or_default()
    );
    println!(
        "  rollback decided -> selector written (operator metric): mean {:.1} ms over {count} switches",
        if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        }
    );
    let mut p99_bucket = f64::INFINITY;
    for le in [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    ] {
        let in_bucket = metric_sum(
            &operator,
            &format!("lockkeeper_traffic_switch_seconds_bucket{{direction=\"back\",le=\"{le}\"}}"),
        )
        .await;
        if count > 0.0 && in_bucket >= 0.99 * count {
            p99_bucket = le.parse::<f64>().unwrap_or(f64::INFINITY) * 1000.0;
            break;
        }
    }
    println!("  rollback decided -> selector written: p99 <= {p99_bucket} ms (histogram bucket)");
    println!("  API writes for one full blue/green release (v1 -> v2, Ready): {writes}");
    ns.cleanup().await;
}
