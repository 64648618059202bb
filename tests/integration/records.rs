//! Runbook stage 4 on the real control plane: the deployment record and
//! log (4.1), cleanup of temporaries (4.3) and the delivery metrics.

use k8s_openapi::api::{apps::v1::ControllerRevision, batch::v1::Job, core::v1::ConfigMap};
use kube::api::ListParams;
use lockkeeper::api::{Phase, Release};
use serde_json::json;

use crate::{
    runbook::{LONG, apply, blue_green, release, service, wait_phase},
    support::{
        BEHAVIOR_LABEL, NEVER_READY, Operator, OperatorOptions, TestNamespace, install_crds,
        poll_until,
    },
};

async fn setup(prefix: &str, extra: &[&str]) -> (TestNamespace, Operator, kube::Api<Release>) {
    install_crds().await;
    let ns = TestNamespace::new(prefix).await;
    service(&ns, "shop").await;
    service(&ns, "shop-preview").await;
    let operator = Operator::start(OperatorOptions {
        namespaces: vec![ns.name().to_owned()],
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        ..OperatorOptions::default()
    })
    .await;
    let api = ns.api::<Release>();
    (ns, operator, api)
}

/// The operator's metrics text.
async fn metrics(operator: &Operator) -> String {
    reqwest::get(format!("{}/metrics", operator.metrics_url()))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("reading operator metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading operator metrics: {e}"))
}

/// The sum of the samples of `metric` whose labels include every `labels`
/// pair.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runbook 4.1 and 4.3: after 12 revisions with `historyLimit: 10`, exactly
/// ten history entries, a deployment log with the same ten revisions newest
/// first, revision records pruned to the history, and finished Jobs deleted
/// after their TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_log_and_cleanup_follow_the_limit() {
    let (ns, _operator, api) = setup("records", &["--finished-job-ttl=2s"]).await;
    for revision in 1..=12 {
        let extra = json!({
            "historyLimit": 10,
            "changes": {"features": [format!("feature {revision}")], "database": ["add a column"]},
            "migration": {"job": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "migrate"}]}}}},
        });
        apply(
            &api,
            &release(&format!("v{revision}"), blue_green("0s"), extra),
        )
        .await;
        wait_phase(&api, revision, Phase::Ready, LONG).await;
    }
    let r = api.get("shop").await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status.unwrap_or_default();
    let history: Vec<i64> = status.history.iter().map(|h| h.revision).collect();
    assert_eq!(history, (3..=12).rev().collect::<Vec<_>>());
    let newest = &status.history[0];
    assert_eq!(newest.changes.features, ["feature 12"]);
    assert!(
        newest
            .steps
            .iter()
            .any(|s| s.name == "Migrate" && s.finished_at.is_some()),
        "step timings are recorded: {:?}",
        newest.steps
    );

    let log = ns
        .api::<ConfigMap>()
        .get("shop-deployment-log")
        .await
        .unwrap_or_else(|e| panic!("reading the deployment log: {e}"));
    let text = log
        .data
        .unwrap_or_default()
        .get("DEPLOYMENTS.md")
        .cloned()
        .unwrap_or_default();
    let headings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("## Revision"))
        .collect();
    println!(
        "deployment log: {} bytes, {} revisions",
        text.len(),
        headings.len()
    );
    assert_eq!(headings.len(), 10, "{text}");
    assert!(
        headings[0].starts_with("## Revision 12 · v12 · Ready"),
        "{headings:?}"
    );
    assert!(headings[9].starts_with("## Revision 3 "), "{headings:?}");
    assert!(text.contains("  - feature 12") && text.contains("| Migrate | Succeeded |"));

    let records = poll_until("revision records pruned to the history", LONG, || async {
        let list = ns
            .api::<ControllerRevision>()
            .list(&ListParams::default().labels("lockkeeper.dev/release=shop"))
            .await
            .map_err(|e| e.to_string())?;
        let mut revisions: Vec<i64> = list.items.iter().filter_map(|r| r.revision).collect();
        revisions.sort_unstable();
        if revisions == (3..=12).collect::<Vec<_>>() {
            Ok(revisions)
        } else {
            Err(format!("{revisions:?}"))
        }
    })
    .await;
    println!("revision records kept: {records:?}");
    poll_until("finished Jobs deleted after their TTL", LONG, || async {
        let list = ns
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        if list.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} Jobs left", list.items.len()))
        }
    })
    .await;
    ns.cleanup().await;
}

/// The delivery metrics for a run of releases with one rollback: releases
/// by result, deployments by outcome, rollbacks by reason, time to restore
/// and step durations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_metrics_count_releases_rollbacks_and_restore_time() {
    let (ns, operator, api) = setup("dora", &[]).await;
    for (revision, bad) in [(1, false), (2, false), (3, true), (4, false)] {
        let extra = if bad {
            json!({"workload": {"progressDeadline": "2s", "template": {"metadata": {"labels": {"app": "shop", BEHAVIOR_LABEL: NEVER_READY}}}}})
        } else {
            json!({})
        };
        apply(
            &api,
            &release(&format!("v{revision}"), blue_green("0s"), extra),
        )
        .await;
        let want = if bad { Phase::RolledBack } else { Phase::Ready };
        wait_phase(&api, revision, want, LONG).await;
    }
    let text = metrics(&operator).await;
    let ns_name = ns.name().to_owned();
    fn of<'a>(ns: &'a str, labels: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = vec![("namespace", ns), ("release", "shop")];
        all.extend_from_slice(labels);
        all
    }
    let ready = sample(
        &text,
        "lockkeeper_releases_total",
        &of(&ns_name, &[("result", "Ready")]),
    );
    let rolled_back = sample(
        &text,
        "lockkeeper_releases_total",
        &of(&ns_name, &[("result", "RolledBack")]),
    );
    let success = sample(
        &text,
        "lockkeeper_deployments_total",
        &of(&ns_name, &[("outcome", "success")]),
    );
    let failure = sample(
        &text,
        "lockkeeper_deployments_total",
        &of(&ns_name, &[("outcome", "failure")]),
    );
    let rollbacks = sample(
        &text,
        "lockkeeper_rollbacks_total",
        &of(&ns_name, &[("reason", "Deploy")]),
    );
    let restores = sample(
        &text,
        "lockkeeper_time_to_restore_seconds_count",
        &of(&ns_name, &[]),
    );
    let restore_sum = sample(
        &text,
        "lockkeeper_time_to_restore_seconds_sum",
        &of(&ns_name, &[]),
    );
    let deploys = sample(
        &text,
        "lockkeeper_step_duration_seconds_count",
        &[("step", "Deploy")],
    );
    println!(
        "releases Ready {ready} RolledBack {rolled_back}; deployments success {success} failure {failure}; rollbacks(Deploy) {rollbacks}; time to restore {restore_sum:.2}s over {restores}; Deploy steps timed {deploys}"
    );
    assert_eq!((ready, rolled_back), (3.0, 1.0));
    assert_eq!((success, failure), (3.0, 1.0));
    assert_eq!(rollbacks, 1.0);
    assert_eq!(restores, 1.0);
    assert!(restore_sum > 0.0 && restore_sum < 60.0, "{restore_sum}");
    assert!(deploys >= 4.0, "{deploys}");
    let phase = sample(
        &text,
        "lockkeeper_release_phase_since_seconds",
        &of(&ns_name, &[("phase", "Ready")]),
    );
    assert!(phase > 1.7e9, "phase-since gauge is a unix time: {phase}");
    ns.cleanup().await;
}
