//! The measurement layer against real servers: HTTP checks and dependency
//! probes on loopback targets, Prometheus checks against the cluster's real
//! Prometheus scraping a target whose metrics change at runtime, the load
//! probe under injected latency, and readiness and capacity read from the
//! real API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use lockkeeper::api::checks::{DnsProbe, HttpCheck, HttpProbe, LoadCheck, TcpProbe};
use lockkeeper::checks::prometheus::{
    PrometheusServer, QueryError, QueryVars, compile_condition, prometheus,
};
use lockkeeper::checks::{Outcome, capacity, dependency, http, http_client, load};
use serde_json::json;

use crate::support::{HttpTarget, TestNamespace, cluster, free_port};

const SCRAPE_WAIT: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    http_client(Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"))
}

fn http_check(spec: serde_json::Value) -> HttpCheck {
    serde_json::from_value(spec).unwrap_or_else(|e| panic!("an HttpCheck: {e}"))
}

#[tokio::test]
async fn http_check_follows_the_status() {
    let target = HttpTarget::start().await;
    let url = format!("{}/health", target.url());
    let check = http_check(json!({ "url": url }));
    let client = client();

    let m = http::http(&client, &url, &check, &[]).await;
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    assert_eq!(m.value.as_deref(), Some("200"));

    target.set_status(503);
    let m = http::http(&client, &url, &check, &[]).await;
    assert_eq!(m.outcome, Outcome::Fail, "{}", m.message);
    assert_eq!(m.value.as_deref(), Some("503"));
    assert!(
        m.message.contains("answered 503, expected 200"),
        "{}",
        m.message
    );

    // A status the check expects passes.
    let accepting = http_check(
        json!({ "url": url, "expectStatus": [200, 503], "method": "POST",
        "body": "{}", "headers": [{"name": "X-Probe", "value": "1"}] }),
    );
    let headers = [("Authorization".to_owned(), "Bearer secret".to_owned())];
    let m = http::http(&client, &url, &accepting, &headers).await;
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    assert!(!m.message.contains("secret"), "{}", m.message);
}

#[tokio::test]
async fn an_unreachable_or_slow_new_color_fails() {
    let url = format!("http://127.0.0.1:{}/health", free_port());
    let m = http::http(&client(), &url, &http_check(json!({ "url": url })), &[]).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message.contains("Connection refused") || m.message.contains("connection refused"),
        "{}",
        m.message
    );

    let target = HttpTarget::start().await;
    target.set_latency(Duration::from_secs(3));
    let url = target.url();
    let check = http_check(json!({ "url": url, "timeout": "200ms" }));
    let m = http::http(&client(), &url, &check, &[]).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message.contains("no response within 200ms"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn http_check_matches_the_body_by_regex_and_json_pointer() {
    let target = HttpTarget::start().await;
    let url = target.url();
    let client = client();
    let regex =
        |pattern: &str| http_check(json!({ "url": url, "expectBody": { "regex": pattern } }));
    assert_eq!(
        http::http(&client, &url, &regex("^200\\s*$"), &[])
            .await
            .outcome,
        Outcome::Pass
    );
    let m = http::http(&client, &url, &regex("healthy"), &[]).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message.contains("does not match /healthy/"),
        "{}",
        m.message
    );

    // A real JSON API: Prometheus' build information.
    let prometheus = cluster().await.prometheus();
    let info = format!("{}/api/v1/status/buildinfo", prometheus.url());
    let pointer = |pointer: &str, equals: Option<&str>| {
        http_check(
            json!({ "url": info, "expectBody": { "jsonPointer": pointer, "equals": equals } }),
        )
    };
    let m = http::http(&client, &info, &pointer("/status", Some("success")), &[]).await;
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    let m = http::http(&client, &info, &pointer("/data/version", None), &[]).await;
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    let m = http::http(&client, &info, &pointer("/status", Some("error")), &[]).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message
            .contains(r#"/status is "success", expected "error""#),
        "{}",
        m.message
    );
    // The target's body, `200`, is JSON too, but a number without fields.
    let m = http::http(&client, &url, &pointer("/status", None), &[]).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message.contains("no field at \"/status\""),
        "{}",
        m.message
    );
}

fn vars(app: &str) -> QueryVars {
    QueryVars {
        app: app.to_owned(),
        namespace: "shop".into(),
        color: "green".into(),
        version: "1.2.0".into(),
        revision: 3,
    }
}

fn server(address: String) -> PrometheusServer {
    PrometheusServer {
        address,
        bearer_token: None,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", free_port())
}

#[tokio::test]
async fn prometheus_condition_follows_the_metric_at_runtime() {
    let prom = cluster().await.prometheus();
    let target = HttpTarget::start().await;
    let app = unique("lk-checks");
    // The job is `<app>-green`, so the templated query only finds it when
    // `{{app}}` and `{{color}}` are replaced.
    let job = format!("{app}-green");
    target.set_metric("lk_error_ratio", 0.001);
    let _registered = prom.register_target(&job, &target);
    let direct = format!("lk_error_ratio{{job=\"{job}\"}}");
    prom.wait_for_value(&direct, SCRAPE_WAIT, |v| v < 0.01)
        .await;

    let query = "lk_error_ratio{job=\"{{app}}-{{color}}\"}";
    let condition = compile_condition("result < 0.01").unwrap_or_else(|e| panic!("{e}"));
    let server = server(prom.url().to_owned());
    let client = client();
    let timeout = Duration::from_secs(5);
    let m = prometheus(&client, &server, query, &condition, &vars(&app), timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    assert_eq!(m.value.as_deref(), Some("0.001"));

    target.set_metric("lk_error_ratio", 0.25);
    prom.wait_for_value(&direct, SCRAPE_WAIT, |v| v > 0.2).await;
    let m = prometheus(&client, &server, query, &condition, &vars(&app), timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.outcome, Outcome::Fail, "{}", m.message);
    assert_eq!(m.value.as_deref(), Some("0.25"));
    assert!(
        m.message.contains("result < 0.01 does not hold"),
        "{}",
        m.message
    );

    // NaN (0/0) is inconclusive, never a pass, even for a condition that
    // would hold for any number.
    let nan = format!("{direct} * 0 / 0");
    let any = compile_condition("result == result || true").unwrap_or_else(|e| panic!("{e}"));
    let m = prometheus(&client, &server, &nan, &any, &vars(&app), timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.outcome, Outcome::Inconclusive, "{}", m.message);
}

#[tokio::test]
async fn an_empty_result_is_inconclusive() {
    let prom = cluster().await.prometheus();
    let condition = compile_condition("result < 0.01").unwrap_or_else(|e| panic!("{e}"));
    let m = prometheus(
        &client(),
        &server(prom.url().to_owned()),
        "lk_no_such_metric{app=\"{{app}}\"}",
        &condition,
        &vars(&unique("lk-empty")),
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.outcome, Outcome::Inconclusive, "{}", m.message);
    assert!(m.message.contains("no samples"), "{}", m.message);
}

#[tokio::test]
async fn an_unreachable_prometheus_is_inconclusive_with_the_reason() {
    let address = format!("http://127.0.0.1:{}", free_port());
    let condition = compile_condition("result < 0.01").unwrap_or_else(|e| panic!("{e}"));
    let m = prometheus(
        &client(),
        &server(address.clone()),
        "up",
        &condition,
        &vars("a"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.outcome, Outcome::Inconclusive);
    assert!(m.message.contains(&address), "{}", m.message);
    assert!(
        m.message.to_lowercase().contains("connection refused"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn bad_promql_carries_prometheus_own_error_text() {
    let prom = cluster().await.prometheus();
    let condition = compile_condition("result < 0.01").unwrap_or_else(|e| panic!("{e}"));
    let err = prometheus(
        &client(),
        &server(prom.url().to_owned()),
        "sum(rate(http_requests_total[1m]) by",
        &condition,
        &vars("a"),
        Duration::from_secs(5),
    )
    .await;
    let Err(err) = err else {
        panic!("Prometheus must reject the query: {err:?}");
    };
    match &err {
        QueryError::InvalidQuery { error, .. } => {
            assert!(error.contains("parse error"), "{error}");
        }
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
    println!("{err}");
}

fn load_check(url: &str, extra: serde_json::Value) -> LoadCheck {
    let mut spec = json!({ "url": url, "requests": 100, "concurrency": 10 });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(spec).unwrap_or_else(|e| panic!("a LoadCheck: {e}"))
}

#[tokio::test]
async fn load_probe_p95_rises_with_injected_latency() {
    let target = HttpTarget::start().await;
    let url = reqwest::Url::parse(&target.url()).unwrap_or_else(|e| panic!("{e}"));
    let client = client();
    let before = load::run_load(&client, &url, 100, 10, load::REQUEST_TIMEOUT).await;
    target.set_latency(Duration::from_millis(200));
    let after = load::run_load(&client, &url, 100, 10, load::REQUEST_TIMEOUT).await;
    let (Some(p95_before), Some(p95_after)) = (before.percentile(95.0), after.percentile(95.0))
    else {
        panic!("no latencies: {before:?} {after:?}");
    };
    println!("load probe p95: {p95_before:?} without latency, {p95_after:?} with 200ms injected");
    assert!(p95_after >= Duration::from_millis(200), "{p95_after:?}");
    assert!(p95_after > p95_before);
    assert_eq!((before.errors, after.errors), (0, 0));
    assert!(target.requests() >= 200);

    let check = load_check(target.url().as_str(), json!({ "maxP95": "100ms" }));
    let m = load::evaluate_load(&after, &check);
    assert_eq!(m.outcome, Outcome::Fail, "{}", m.message);
    assert!(m.message.contains("> 100ms"), "{}", m.message);

    // Errors count against the error rate.
    target.set_latency(Duration::ZERO);
    target.set_status(500);
    let m = load::load(&client, &target.url(), &check).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(m.message.contains("error rate 1.000 > 0"), "{}", m.message);
}

#[tokio::test]
async fn a_closed_port_fails_the_tcp_dependency() {
    let target = HttpTarget::start().await;
    let timeout = Duration::from_secs(2);
    let open = TcpProbe {
        host: Some("127.0.0.1".into()),
        port: Some(target.addr().port()),
        url: None,
    };
    let m = dependency::tcp(&open, timeout).await;
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);

    let closed = TcpProbe {
        host: None,
        port: None,
        url: Some(format!("tcp://127.0.0.1:{}", free_port())),
    };
    let m = dependency::tcp(&closed, timeout).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message.starts_with("connecting to 127.0.0.1:"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn http_and_dns_dependencies() {
    let target = HttpTarget::start().await;
    let client = client();
    let timeout = Duration::from_secs(2);
    let probe = |expect_body: Option<&str>| HttpProbe {
        url: format!("{}/ready", target.url()),
        expect_status: vec![],
        expect_body: expect_body.map(Into::into),
    };
    assert_eq!(
        dependency::http(&client, &probe(Some("^200")), timeout)
            .await
            .outcome,
        Outcome::Pass
    );
    assert_eq!(
        dependency::http(&client, &probe(Some("^ok")), timeout)
            .await
            .outcome,
        Outcome::Fail
    );
    target.set_status(204);
    assert_eq!(
        dependency::http(&client, &probe(None), timeout)
            .await
            .outcome,
        Outcome::Pass
    );
    target.set_status(500);
    let m = dependency::http(&client, &probe(None), timeout).await;
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(
        m.message.contains("answered 500, expected a 2xx status"),
        "{}",
        m.message
    );

    let m = dependency::dns(
        &DnsProbe {
            name: "localhost".into(),
        },
        timeout,
    )
    .await;
    assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    let m = dependency::dns(
        &DnsProbe {
            name: "lockkeeper-missing.invalid".into(),
        },
        timeout,
    )
    .await;
    assert_eq!(m.outcome, Outcome::Fail, "{}", m.message);
}

#[tokio::test]
async fn service_readiness_and_capacity_from_the_api_server() {
    let ns = TestNamespace::new("checks").await;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": { "name": "db-1", "labels": { "kubernetes.io/service-name": "db" } },
        "addressType": "IPv4",
        "endpoints": [
            { "addresses": ["10.0.0.1"], "conditions": { "ready": true } },
            { "addresses": ["10.0.0.2"], "conditions": { "ready": false } },
            { "addresses": ["10.0.0.3"] },
        ],
    }))
    .unwrap_or_else(|e| panic!("an EndpointSlice: {e}"));
    ns.api::<EndpointSlice>()
        .create(&PostParams::default(), &slice)
        .await
        .unwrap_or_else(|e| panic!("creating EndpointSlice db-1 in {}: {e}", ns.name()));
    let slices = ns
        .api::<EndpointSlice>()
        .list(&ListParams::default().labels("kubernetes.io/service-name=db"))
        .await
        .unwrap_or_else(|e| panic!("listing EndpointSlices of db: {e}"))
        .items;
    assert_eq!(
        dependency::service_ready("db", &slices, 2).outcome,
        Outcome::Pass
    );
    let m = dependency::service_ready("db", &slices, 3);
    assert_eq!(m.outcome, Outcome::Fail);
    assert_eq!(m.message, "Service db has 2 ready endpoints, needs 3");

    // The kwok nodes have room for a small color but not for a huge one.
    let client = cluster().await.client();
    let nodes = kube::Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing Nodes: {e}"))
        .items;
    let pods = kube::Api::<Pod>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing Pods: {e}"))
        .items;
    let template = |cpu: &str| -> PodSpec {
        serde_json::from_value(json!({ "containers": [{ "name": "app",
            "resources": { "requests": { "cpu": cpu, "memory": "64Mi" } } }] }))
        .unwrap_or_else(|e| panic!("a PodSpec: {e}"))
    };
    let small =
        capacity::fits(&template("100m"), 2, &[], &nodes, &pods).unwrap_or_else(|e| panic!("{e}"));
    assert!(small.fits, "{small:?}");
    let huge = capacity::fits(&template("100000"), 2, &[], &nodes, &pods)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!huge.fits);
    println!("{}", huge.measurement(2).message);
    ns.cleanup().await;
}

/// Our load probe against Debian's `ab` (apache2-utils), same target, same
/// fixed latency, same request count and concurrency. Prints both p95s and
/// their ratio, against `ab -k` (keep-alive, as the probe does) and plain
/// `ab`; asserts nothing about time. Installs `ab` with apt-get if it is
/// missing. The target runs on a runtime of its own, so that it does not
/// share threads with the probe any more than with `ab`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored"]
async fn bench_load_probe_vs_ab() {
    const REQUESTS: u32 = 1000;
    const CONCURRENCY: u32 = 10;
    let ab = ensure_ab();
    let client = client();
    for latency in [Duration::from_millis(20), Duration::from_millis(50)] {
        let (url, _target) = target_on_own_runtime(latency);
        let parsed = reqwest::Url::parse(&url).unwrap_or_else(|e| panic!("{e}"));
        // Warm up the target and the connection pool.
        let _ = load::run_load(&client, &parsed, 50, CONCURRENCY, load::REQUEST_TIMEOUT).await;
        let mut ratios_k = Vec::new();
        let mut ratios_plain = Vec::new();
        for round in 1..=5 {
            let ours = load::run_load(
                &client,
                &parsed,
                REQUESTS,
                CONCURRENCY,
                load::REQUEST_TIMEOUT,
            )
            .await;
            let ms = |p: f64| ours.percentile(p).unwrap_or_default().as_secs_f64() * 1000.0;
            let our_p95 = ms(95.0);
            let ab_k = run_ab(&ab, &url, REQUESTS, CONCURRENCY, true).await;
            let ab_plain = run_ab(&ab, &url, REQUESTS, CONCURRENCY, false).await;
            println!(
                "latency {latency:?} round {round} (-n {REQUESTS} -c {CONCURRENCY}): \
                 ours p50 {:.2}ms p95 {our_p95:.2}ms p99 {:.2}ms errors {} | \
                 ab -k p95 {ab_k}ms, ours/ab -k {:.3} | ab p95 {ab_plain}ms, ours/ab {:.3}",
                ms(50.0),
                ms(99.0),
                ours.errors,
                our_p95 / ab_k,
                our_p95 / ab_plain,
            );
            ratios_k.push(our_p95 / ab_k);
            ratios_plain.push(our_p95 / ab_plain);
        }
        println!(
            "latency {latency:?}: median p95 ratio ours/ab -k {:.3}, ours/ab {:.3} over 5 rounds",
            median(&mut ratios_k),
            median(&mut ratios_plain)
        );
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Starts an [`HttpTarget`] with a fixed latency on a runtime and thread
/// of its own; it stops when the returned sender is dropped.
fn target_on_own_runtime(latency: Duration) -> (String, std::sync::mpsc::Sender<()>) {
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building the target's runtime: {e}"));
        runtime.block_on(async {
            let target = HttpTarget::start().await;
            target.set_latency(latency);
            let _ = url_tx.send(format!("{}/", target.url()));
            // Waits for the sender's drop; the runtime keeps serving.
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
        });
    });
    let url = url_rx
        .recv()
        .unwrap_or_else(|e| panic!("the target thread ended early: {e}"));
    (url, stop_tx)
}

fn ensure_ab() -> String {
    let found = |_: ()| {
        std::process::Command::new("sh")
            .args(["-c", "command -v ab"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(path) = found(()) {
        return path;
    }
    let status = std::process::Command::new("sh")
        .args(["-c", "apt-get install -y -q apache2-utils >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q apache2-utils >/dev/null)"])
        .status()
        .unwrap_or_else(|e| panic!("running apt-get to install apache2-utils: {e}"));
    assert!(
        status.success(),
        "apt-get install apache2-utils failed: {status}"
    );
    found(()).unwrap_or_else(|| panic!("ab is still missing after installing apache2-utils"))
}

/// Runs `ab` and returns its 95% line in milliseconds.
async fn run_ab(ab: &str, url: &str, requests: u32, concurrency: u32, keep_alive: bool) -> f64 {
    let mut command = std::process::Command::new(ab);
    command.args([
        "-q",
        "-n",
        &requests.to_string(),
        "-c",
        &concurrency.to_string(),
    ]);
    if keep_alive {
        command.arg("-k");
    }
    command.arg(url);
    // ab blocks; the target answers on this runtime's other threads.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap_or_else(|e| panic!("waiting for ab: {e}"))
        .unwrap_or_else(|e| panic!("running {ab} against {url}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ab failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("95%"))
                .then(|| words.next()?.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no 95% line in ab's output:\n{stdout}"))
}
