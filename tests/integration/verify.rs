//! Verification checks inside the runbook: PreCutover checks gate the
//! cutover, PostCutover checks roll traffic back, measured against real
//! HTTP servers on loopback and the real Prometheus.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    events::v1::Event,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use lockkeeper::api::{Phase, Release, status::CheckResult};
use serde_json::json;

use crate::runbook::{
    LONG, apply, blue_green, release, selected_color as color, setup, wait_phase,
};
use crate::support::{HttpTarget, cluster, events_about, poll_until, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precutover_http_checks_gate_the_cutover() {
    let (ns, _operator, api) = setup("verify-http").await;
    let target = HttpTarget::start().await;
    let health = |url: String| {
        json!({"verify": [{"name": "health", "when": ["PreCutover"], "interval": "200ms", "count": 3,
                           "http": {"url": format!("{url}/health"), "expectStatus": [200]}}]})
    };
    apply(&api, &release("v1", blue_green("1s"), health(target.url()))).await;
    let r = wait_phase(&api, 1, Phase::Ready, LONG).await;
    let checks = r.status.unwrap_or_default().checks;
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(
        (checks[0].passed, checks[0].result),
        (3, Some(CheckResult::Passed))
    );
    assert!(target.requests() >= 3);

    // v2's health endpoint answers 503: no traffic moves, the revision rolls back.
    target.set_status(503);
    apply(&api, &release("v2", blue_green("1s"), health(target.url()))).await;
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    let status = r.status.unwrap_or_default();
    assert!(
        status
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("check health failed") && f.contains("503")),
        "{:?}",
        status.failure
    );
    let svc = ns
        .api::<Service>()
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(color(&svc).as_deref(), Some("blue"));
    poll_until(
        "a CheckFailed event with the measured value",
        Duration::from_secs(10),
        || async {
            let events = events_about(&ns.api::<Event>(), "Release", "shop").await?;
            events
                .iter()
                .any(|e| e.reason == "CheckFailed" && e.note.contains("503"))
                .then_some(())
                .ok_or(format!("{events:?}"))
        },
    )
    .await;
    ns.cleanup().await;
}

/// Also the issue's figure: the time from a failing Prometheus measurement
/// becoming visible to traffic being back on the old color.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_prometheus_measurement_after_cutover_moves_traffic_back() {
    let (ns, _operator, api) = setup("verify-prom").await;
    let prometheus = cluster().await.prometheus();
    let target = HttpTarget::start().await;
    target.set_metric("shop_error_ratio", 0.0);
    let job = format!("shop-{}", target.addr().port());
    let _registration = prometheus.register_target(&job, &target);
    prometheus
        .wait_for_value(&format!(r#"shop_error_ratio{{job="{job}"}}"#), LONG, |v| {
            v == 0.0
        })
        .await;

    let checks = json!({
        "prometheus": {"address": prometheus.url()},
        "verify": [{"name": "error-rate", "when": ["PostCutover"], "interval": "500ms", "count": 600,
                    "prometheus": {"query": format!(r#"max(shop_error_ratio{{job="{job}"}})"#), "condition": "result < 0.5"}}]
    });
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    apply(&api, &release("v2", blue_green("10m"), checks)).await;
    wait_for(&api, "shop", LONG, |r: &Release| {
        r.status
            .as_ref()
            .is_some_and(|s| s.revision == Some(2) && s.checks.iter().any(|c| c.passed >= 2))
    })
    .await;
    let services = ns.api::<Service>();
    assert_eq!(
        color(&services.get("shop").await.unwrap_or_else(|e| panic!("{e}"))).as_deref(),
        Some("green")
    );

    let flipped = Instant::now();
    target.set_metric("shop_error_ratio", 0.9);
    prometheus
        .wait_for_value(&format!(r#"shop_error_ratio{{job="{job}"}}"#), LONG, |v| {
            v > 0.5
        })
        .await;
    let visible = Instant::now();
    wait_for(&services, "shop", LONG, |s: &Service| {
        color(s).as_deref() == Some("blue")
    })
    .await;
    let back = visible.elapsed();
    let from_flip = flipped.elapsed();
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    let failure = r.status.and_then(|s| s.failure).unwrap_or_default();
    assert!(
        failure.contains("error-rate") && failure.contains("0.9"),
        "{failure}"
    );
    println!(
        "error metric flipped -> traffic back on the old color: {:.0} ms; failing value visible in Prometheus -> traffic back: {:.0} ms (scrape 1 s, check interval 500 ms)",
        from_flip.as_secs_f64() * 1000.0,
        back.as_secs_f64() * 1000.0
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restart_in_the_new_color_fails_the_stability_check() {
    let (ns, _operator, api) = setup("verify-pods").await;
    let extra = json!({
        "verify": [{"name": "stability", "when": ["PreCutover"], "interval": "500ms", "count": 600, "pods": {"maxRestarts": 0}}]
    });
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    apply(&api, &release("v2", blue_green("1s"), extra)).await;
    wait_for(&api, "shop", LONG, |r: &Release| {
        r.status
            .as_ref()
            .is_some_and(|s| s.revision == Some(2) && s.checks.iter().any(|c| c.passed >= 1))
    })
    .await;
    // Play the kubelet reporting a crash of one green container.
    let pods: Api<Pod> = ns.api();
    let green = pods
        .list(&ListParams::default().labels("lockkeeper.dev/color=green"))
        .await
        .unwrap_or_else(|e| panic!("listing green pods: {e}"));
    let pod = green
        .items
        .first()
        .unwrap_or_else(|| panic!("no green pods"));
    let mut statuses = pod
        .status
        .clone()
        .unwrap_or_default()
        .container_statuses
        .unwrap_or_default();
    for cs in &mut statuses {
        cs.restart_count = 2;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"containerStatuses": statuses}})),
    )
    .await
    .unwrap_or_else(|e| panic!("reporting restarts on {name}: {e}"));
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    let failure = r.status.and_then(|s| s.failure).unwrap_or_default();
    assert!(
        failure.contains("stability") && failure.contains("restarts"),
        "{failure}"
    );
    let svc = ns
        .api::<Service>()
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(color(&svc).as_deref(), Some("blue"));
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_checks_dependencies_and_capacity_before_anything_changes() {
    let (ns, _operator, api) = setup("preflight").await;
    let target = HttpTarget::start().await;
    let closed = crate::support::free_port();
    let preflight = |tcp_port: u16, cpu: &str| {
        json!({
            "preflight": {"timeout": "3s", "capacity": true, "dependencies": [
                {"name": "payments", "http": {"url": format!("{}/health", target.url()), "expectStatus": [200]}},
                {"name": "mysql", "tcp": {"url": format!("tcp://127.0.0.1:{tcp_port}")}},
                {"name": "kube-dns", "dns": {"name": "localhost"}}
            ]},
            "workload": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:v", "resources": {"requests": {"cpu": cpu}}}]}}}
        })
    };
    // Everything reachable and the pods fit: the revision runs to Ready.
    apply(
        &api,
        &release(
            "v1",
            blue_green("1s"),
            preflight(target.addr().port(), "100m"),
        ),
    )
    .await;
    let r = wait_phase(&api, 1, Phase::Ready, LONG).await;
    let deps = r.status.unwrap_or_default().dependencies;
    assert_eq!(deps.len(), 4, "{deps:?}");
    assert!(deps.iter().all(|d| d.ready), "{deps:?}");

    // A closed port: Failed after the preflight timeout, nothing deployed.
    apply(
        &api,
        &release("v2", blue_green("1s"), preflight(closed, "100m")),
    )
    .await;
    let r = wait_phase(&api, 2, Phase::Failed, LONG).await;
    let status = r.status.unwrap_or_default();
    let failure = status.failure.unwrap_or_default();
    assert!(
        failure.contains("mysql") && failure.contains("nothing was changed"),
        "{failure}"
    );
    assert!(
        ns.api::<k8s_openapi::api::apps::v1::Deployment>()
            .get_opt("shop-green")
            .await
            .ok()
            .flatten()
            .is_none(),
        "green never created"
    );

    // Requests no node can hold: capacity fails.
    apply(
        &api,
        &release(
            "v3",
            blue_green("1s"),
            preflight(target.addr().port(), "5000"),
        ),
    )
    .await;
    let r = wait_phase(&api, 3, Phase::Failed, LONG).await;
    let failure = r.status.and_then(|s| s.failure).unwrap_or_default();
    assert!(failure.contains("capacity"), "{failure}");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_checks_run_once_per_measurement_and_a_failing_job_rolls_back() {
    let (ns, _operator, api) = setup("verify-job").await;
    let job = |behavior: &str| {
        json!({"verify": [{"name": "db", "when": ["PreCutover"], "job": {"template": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {crate::support::BEHAVIOR_LABEL: behavior}},
                         "spec": {"containers": [{"name": "check", "command": ["app", "check", "--database"]}]}}
        }}}]})
    };
    apply(&api, &release("v1", blue_green("1s"), job("ok"))).await;
    let r = wait_phase(&api, 1, Phase::Ready, LONG).await;
    let checks = r.status.unwrap_or_default().checks;
    assert_eq!(
        checks.first().map(|c| c.result),
        Some(Some(CheckResult::Passed)),
        "{checks:?}"
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = ns.api();
    let listed = jobs
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.items.len(), 1, "one Job for one measurement");
    let image = listed.items[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].image.clone());
    assert_eq!(
        image.as_deref(),
        Some("shop:v1"),
        "the version's image by default"
    );

    apply(
        &api,
        &release("v2", blue_green("1s"), job(crate::support::FAIL)),
    )
    .await;
    let r = wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    let failure = r.status.and_then(|s| s.failure).unwrap_or_default();
    assert!(failure.contains("check db failed"), "{failure}");
    let svc = ns
        .api::<Service>()
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(color(&svc).as_deref(), Some("blue"));
    ns.cleanup().await;
}
