//! Environments on the real control plane: which Environment governs a
//! namespace, its defaults, and overlapping selectors.

use std::time::Duration;

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use lockkeeper::api::{Environment, Phase, Release};
use serde_json::json;

use crate::runbook::{LONG, apply, blue_green, release, service, wait_phase};
use crate::support::{Operator, TestNamespace, cluster, install_crds, wait_for};

/// An Environment selecting namespaces labelled `e2e.lockkeeper.dev/env=<tag>`;
/// the tag keeps parallel tests apart (Environments are cluster-scoped).
async fn environment(name: &str, tag: &str, extra: serde_json::Value) -> Environment {
    let mut spec = json!({"namespaceSelector": {"matchLabels": {"e2e.lockkeeper.dev/env": tag}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let env = Environment::new(
        name,
        serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}")),
    );
    Api::<Environment>::all(cluster().await.client())
        .create(&PostParams::default(), &env)
        .await
        .unwrap_or_else(|e| panic!("creating Environment {name}: {e}"))
}

async fn delete(env: &Environment) {
    let _ = Api::<Environment>::all(cluster().await.client())
        .delete(&env.name_any(), &DeleteParams::default())
        .await;
}

fn condition(r: &Release, type_: &str) -> Option<(String, String, String)> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_rules_and_defaults_apply_and_overlaps_stall() {
    install_crds().await;
    let tag = format!("t{}", crate::support::free_port());
    let ns = TestNamespace::with_labels("envs", &[("e2e.lockkeeper.dev/env", tag.as_str())]).await;
    service(&ns, "shop").await;
    service(&ns, "shop-preview").await;
    let _operator = Operator::for_namespace(ns.name()).await;
    let api = ns.api::<Release>();

    // No Environment yet: the release runs, and status says no rules apply.
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    let r = wait_phase(&api, 1, Phase::Ready, LONG).await;
    let (status, reason, message) = condition(&r, "Environment").unwrap_or_default();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NoEnvironment"),
        "{message}"
    );
    assert!(r.status.as_ref().is_some_and(|s| s.environment.is_none()));

    // Relabelling the namespace into another Environment wakes the Release
    // at once (its status names the Environment), with no spec change.
    let other = format!("{tag}-relabelled");
    let relabelled = environment(&other, &other, json!({})).await;
    let started = std::time::Instant::now();
    ns.set_label("e2e.lockkeeper.dev/env", Some(&other)).await;
    wait_for(&api, "shop", Duration::from_secs(15), |r: &Release| {
        r.status
            .as_ref()
            .is_some_and(|s| s.environment.as_deref() == Some(other.as_str()))
    })
    .await;
    println!(
        "namespace relabelled → Release governed by {other} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    ns.set_label("e2e.lockkeeper.dev/env", Some(&tag)).await;
    delete(&relabelled).await;
    wait_for(&api, "shop", Duration::from_secs(15), |r: &Release| {
        r.status.as_ref().is_some_and(|s| s.environment.is_none())
    })
    .await;

    // An Environment whose default turns automatic rollback off: a failing
    // revision is left as it is instead of rolled back.
    let production = environment(
        &format!("{tag}-production"),
        &tag,
        json!({"defaults": {"rollback": {"automatic": false}}}),
    )
    .await;
    let never_ready = json!({"workload": {"progressDeadline": "2s", "template": {"metadata": {"labels": {"app": "shop", crate::support::BEHAVIOR_LABEL: crate::support::NEVER_READY}}}}});
    apply(&api, &release("v2", blue_green("1s"), never_ready)).await;
    let r = wait_phase(&api, 2, Phase::Failed, LONG).await;
    let status = r.status.clone().unwrap_or_default();
    assert_eq!(
        status.environment.as_deref(),
        Some(production.name_any().as_str())
    );
    assert!(
        status
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("automatic rollback is off")),
        "{:?}",
        status.failure
    );
    let (status, reason, _) = condition(&r, "Environment").unwrap_or_default();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Matched"));

    // A second Environment selecting the same namespace: the release stalls
    // naming both.
    let overlap = environment(&format!("{tag}-overlap"), &tag, json!({})).await;
    let r = wait_for(&api, "shop", LONG, |r: &Release| {
        condition(r, "Stalled")
            .is_some_and(|(s, reason, _)| s == "True" && reason == "EnvironmentConflict")
    })
    .await;
    let (_, _, message) = condition(&r, "Stalled").unwrap_or_default();
    assert!(
        message.contains(&production.name_any()) && message.contains(&overlap.name_any()),
        "{message}"
    );
    // The Environment's own status says so too, and counts its namespaces.
    let envs = Api::<Environment>::all(cluster().await.client());
    let env = wait_for(&envs, &production.name_any(), LONG, |e: &Environment| {
        e.status.as_ref().is_some_and(|s| {
            s.namespaces == Some(1)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
        })
    })
    .await;
    let stalled = env
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Stalled"))
        .map(|c| c.message)
        .unwrap_or_default();
    println!("Environment status: {stalled}");
    assert!(stalled.contains(&overlap.name_any()), "{stalled}");
    delete(&overlap).await;
    wait_for(&envs, &production.name_any(), LONG, |e: &Environment| {
        e.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    delete(&production).await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_window_holds_a_new_revision_until_it_ends() {
    install_crds().await;
    let tag = format!("t{}", crate::support::free_port());
    let ns =
        TestNamespace::with_labels("freeze", &[("e2e.lockkeeper.dev/env", tag.as_str())]).await;
    service(&ns, "shop").await;
    service(&ns, "shop-preview").await;
    let _operator = Operator::for_namespace(ns.name()).await;
    let api = ns.api::<Release>();
    apply(&api, &release("v1", blue_green("1s"), json!({}))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;

    // A window that opened this minute and lasts an hour.
    let env = environment(&format!("{tag}-frozen"), &tag, json!({"freeze": [{"schedule": "* * * * *", "duration": "1h", "reason": "release freeze"}]})).await;
    apply(&api, &release("v2", blue_green("1s"), json!({}))).await;
    let r = wait_for(&api, "shop", LONG, |r: &Release| {
        condition(r, "Reconciling").is_some_and(|(s, reason, _)| s == "True" && reason == "Frozen")
    })
    .await;
    let (_, _, message) = condition(&r, "Reconciling").unwrap_or_default();
    assert!(
        message.contains("waits until") && message.contains("release freeze"),
        "{message}"
    );
    assert_eq!(
        r.status.as_ref().and_then(|s| s.revision),
        Some(1),
        "no new revision inside the window"
    );

    // The window is lifted: the waiting revision starts.
    let envs = Api::<Environment>::all(cluster().await.client());
    envs.patch(
        &env.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"freeze": null}})),
    )
    .await
    .unwrap_or_else(|e| panic!("lifting the freeze: {e}"));
    wait_phase(&api, 2, Phase::Ready, LONG).await;
    delete(&env).await;
    ns.cleanup().await;
}
