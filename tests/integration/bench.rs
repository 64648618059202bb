//! Benchmarks against the local control plane. Each prints its figures and
//! asserts nothing about time or memory: the machines are shared and noisy.
//! Run them with `make bench`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, PostParams};
use lockkeeper::api::Release;
use serde_json::json;

use crate::api::delete_releases;
use crate::support::{Operator, TestNamespace, install_crds, poll_until};

const RELEASES: usize = 1000;
/// Requests in flight while creating the objects.
const CREATE_CONCURRENCY: usize = 32;
/// How long the operator's reconcile counter must stay still to count as idle.
const QUIET: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const IMAGE: &str = "registry.k8s.io/pause:3.10";

fn name(i: usize) -> String {
    format!("app-{i:04}")
}

async fn create_objects(ns: &TestNamespace, i: usize) -> Result<(), String> {
    let name = name(i);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .map_err(|e| e.to_string())?;
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .map_err(|e| format!("creating Service {name}: {e}"))?;
    // No replicas: each Release runs its whole runbook (a Deployment of
    // zero pods, the cutover of its own Service) without loading the
    // control plane with a thousand pods.
    let release: Release = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "version": "v1.0.0",
            "workload": {
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "app", "image": IMAGE}]}},
            },
            "strategy": {"type": "BlueGreen", "blueGreen": {"activeService": name}},
        },
    }))
    .map_err(|e| e.to_string())?;
    ns.api::<Release>()
        .create(&PostParams::default(), &release)
        .await
        .map_err(|e| format!("creating Release {name}: {e}"))?;
    Ok(())
}

/// Releases whose status describes their spec, and a count of phases.
async fn progress(releases: &Api<Release>) -> Result<(usize, BTreeMap<String, usize>), String> {
    let list = releases
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Releases: {e}"))?;
    let mut observed = 0;
    let mut phases = BTreeMap::new();
    for release in &list.items {
        let status = release.status.as_ref();
        if status.and_then(|s| s.observed_generation).is_some()
            && status.and_then(|s| s.observed_generation) == release.metadata.generation
        {
            observed += 1;
        }
        let phase = status
            .and_then(|s| s.phase)
            .map_or_else(|| "none".to_owned(), |p| format!("{p:?}"));
        *phases.entry(phase).or_default() += 1;
    }
    Ok((observed, phases))
}

async fn reconciliations(http: &reqwest::Client, operator: &Operator) -> Result<f64, String> {
    let url = format!("{}/metrics", operator.metrics_url());
    let text = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("lockkeeper_reconciliations_total{kind=\"Release\"} "))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no {key}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::test]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_idle_rss_with_1000_releases() {
    install_crds().await;
    let ns = TestNamespace::new("bench-rss").await;
    let releases: Api<Release> = ns.api();

    let started = Instant::now();
    futures::stream::iter(0..RELEASES)
        .map(|i| create_objects(&ns, i))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let created_in = started.elapsed();
    eprintln!("created {RELEASES} Services and Releases in {created_in:?}");

    let mut operator = Operator::for_namespace(ns.name()).await;
    let pid = operator.pid().expect("the operator is running");
    let started = Instant::now();
    poll_until(
        "every Release to have a status for its generation",
        SETTLE_TIMEOUT,
        || async {
            match progress(&releases).await? {
                (n, _) if n == RELEASES => Ok(()),
                (n, phases) => Err(format!("{n}/{RELEASES} observed; phases {phases:?}")),
            }
        },
    )
    .await;
    let observed_in = started.elapsed();
    eprintln!("all {RELEASES} Releases observed {observed_in:?} after the operator started");

    let phases = poll_until(
        "every Release to finish its runbook",
        SETTLE_TIMEOUT,
        || async {
            let (_, phases) = progress(&releases).await?;
            let finished: usize = ["Ready", "Failed", "RolledBack"]
                .iter()
                .filter_map(|p| phases.get(*p))
                .sum();
            if finished == RELEASES {
                Ok(phases)
            } else {
                Err(format!("phases {phases:?}"))
            }
        },
    )
    .await;
    let finished_in = started.elapsed();
    eprintln!(
        "all {RELEASES} Releases finished {finished_in:?} after the operator started: {phases:?}"
    );

    // Idle: the reconcile counter has not moved for QUIET.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building an HTTP client");
    let last: Cell<Option<(f64, Instant)>> = Cell::new(None);
    let total = poll_until("the operator to go idle", SETTLE_TIMEOUT, || {
        let (http, operator, last) = (&http, &operator, &last);
        async move {
            let count = reconciliations(http, operator).await?;
            match last.get() {
                Some((seen, since)) if seen == count => {
                    if since.elapsed() >= QUIET {
                        Ok(count)
                    } else {
                        Err(format!(
                            "{count} reconciliations, unchanged for {:?}",
                            since.elapsed()
                        ))
                    }
                }
                _ => {
                    last.set(Some((count, Instant::now())));
                    Err(format!("{count} reconciliations so far"))
                }
            }
        }
    })
    .await;
    let settled_in = last
        .get()
        .map_or(Duration::ZERO, |(_, since)| since.duration_since(started));

    let (rss, peak) = memory_kib(pid).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.log()
    );
    eprintln!(
        "BENCH idle operator with {RELEASES} Releases: VmRSS {} (peak VmHWM {}); \
         settled {settled_in:?} after start ({total} reconciliations; all observed after {observed_in:?}, \
         all finished after {finished_in:?}); creating the objects took {created_in:?}",
        mib(rss),
        mib(peak),
    );
    let started = Instant::now();
    delete_releases(&ns, SETTLE_TIMEOUT).await;
    eprintln!(
        "the operator finalized and deleted {RELEASES} Releases in {:?}",
        started.elapsed()
    );
    ns.cleanup().await;
}
