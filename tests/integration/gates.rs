//! The Environment's gates on the real control plane with real RBAC and
//! real admission (the chart's admission policies): approvals only from
//! users allowed the `approve` verb, naming themselves, never the author
//! with four eyes, and never for another revision; promotion from staging
//! after a soak; freeze overrides; promotion cycles.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    events::v1::Event,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use lockkeeper::api::{Environment, Phase, Release};
use serde_json::{Value, json};

use crate::runbook::{LONG, apply, blue_green, release, service, wait_phase};
use crate::support::{
    Operator, OperatorOptions, TestNamespace, assert_stays, cluster, events_about, install_crds,
    poll_until, repo_root, wait_for,
};

static POLICIES: Mutex<bool> = Mutex::new(false);

/// Installs the chart's admission policies (once per test run) and waits
/// until the API server enforces them.
async fn install_approval_policies() {
    let installed = POLICIES.lock().map(|done| *done).unwrap_or(false);
    if !installed {
        let cluster = cluster().await;
        let bin = cluster
            .bin_dir()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| panic!("no kubectl/helm directory for this cluster"));
        let rendered = std::process::Command::new(bin.join("helm"))
            .args([
                "template",
                "lockkeeper-e2e",
                "charts/lockkeeper",
                "-s",
                "templates/admission-policy.yaml",
            ])
            .current_dir(repo_root())
            .output()
            .unwrap_or_else(|e| panic!("running helm template: {e}"));
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let path = cluster.state_dir().join("admission-policy.yaml");
        std::fs::write(&path, &rendered.stdout).unwrap_or_else(|e| panic!("{e}"));
        let applied = std::process::Command::new(bin.join("kubectl"))
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(&path)
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .output()
            .unwrap_or_else(|e| panic!("running kubectl apply: {e}"));
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
        if let Ok(mut done) = POLICIES.lock() {
            *done = true;
        }
    }
    // A new policy takes a moment to be enforced: probe (a dry run) until
    // an approval naming someone else is refused.
    let probe: Release = serde_json::from_value(json!({
        "apiVersion": "lockkeeper.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": "policy-probe", "annotations": {
            "lockkeeper.dev/approve": "1", "lockkeeper.dev/approver": "nobody"}},
        "spec": release("v1", blue_green("0s"), json!({}))["spec"],
    }))
    .unwrap_or_else(|e| panic!("the probe Release: {e}"));
    let api: Api<Release> = Api::namespaced(cluster().await.client(), "default");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    poll_until("the approval policies to be enforced", LONG, || async {
        match api.create(&dry_run, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("only yourself") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// A namespace governed by an Environment of its own (the tag keeps
/// parallel tests apart), with ServiceAccounts `alice` and `bob` allowed to
/// edit and approve Releases and `mallory` allowed only to edit.
async fn governed(prefix: &str, env: Value) -> (TestNamespace, Environment, String) {
    install_crds().await;
    install_approval_policies().await;
    let tag = format!("g{}", crate::support::free_port());
    let ns = TestNamespace::with_labels(prefix, &[("e2e.lockkeeper.dev/env", tag.as_str())]).await;
    service(&ns, "shop").await;
    service(&ns, "shop-preview").await;
    let mut spec = json!({"namespaceSelector": {"matchLabels": {"e2e.lockkeeper.dev/env": tag}}});
    crate::runbook::merge(&mut spec, env);
    let environment = Environment::new(
        &format!("{tag}-env"),
        serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}")),
    );
    let environment = Api::<Environment>::all(cluster().await.client())
        .create(&PostParams::default(), &environment)
        .await
        .unwrap_or_else(|e| panic!("creating the Environment: {e}"));
    for (role, verbs) in [
        (
            "editor",
            json!(["get", "list", "watch", "create", "update", "patch"]),
        ),
        ("approver", json!(["approve"])),
    ] {
        let r: Role = serde_json::from_value(json!({
            "metadata": {"name": role},
            "rules": [{"apiGroups": ["lockkeeper.dev"], "resources": ["releases"], "verbs": verbs}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        ns.api::<Role>()
            .create(&PostParams::default(), &r)
            .await
            .unwrap_or_else(|e| panic!("creating Role {role}: {e}"));
    }
    for (user, roles) in [
        ("alice", &["editor", "approver"][..]),
        ("bob", &["editor", "approver"][..]),
        ("mallory", &["editor"][..]),
    ] {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(user.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ns.api::<ServiceAccount>()
            .create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("creating ServiceAccount {user}: {e}"));
        for role in roles {
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": {"name": format!("{user}-{role}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": ns.name()}]
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            ns.api::<RoleBinding>()
                .create(&PostParams::default(), &binding)
                .await
                .unwrap_or_else(|e| panic!("binding {user} to {role}: {e}"));
        }
    }
    (ns, environment, tag)
}

fn user(ns: &TestNamespace, name: &str) -> String {
    format!("system:serviceaccount:{}:{name}", ns.name())
}

async fn as_user(ns: &TestNamespace, name: &str) -> Api<Release> {
    let client: Client = cluster().await.client_as_service_account(ns.name(), name);
    Api::namespaced(client, ns.name())
}

async fn annotate(api: &Api<Release>, annotations: Value) -> Result<Release, String> {
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": annotations}})),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    })
}

/// Retries a request the admission policies must refuse until they do (a
/// new policy takes a moment to be enforced), and returns the refusal.
async fn refused(api: &Api<Release>, annotations: Value) -> String {
    poll_until("the API server to refuse", LONG, || async {
        match annotate(api, annotations.clone()).await {
            Err(message) => Ok(message),
            Ok(_) => {
                // Accepted before the policy was in force: undo and retry.
                let cleared: serde_json::Map<String, Value> = annotations
                    .as_object()
                    .map(|m| m.keys().map(|k| (k.clone(), Value::Null)).collect())
                    .unwrap_or_default();
                let _ = annotate(api, Value::Object(cleared)).await;
                Err("accepted".to_owned())
            }
        }
    })
    .await
}

fn phase(r: &Release) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_enforced_by_the_api_server_and_name_their_revision() {
    let (ns, env, _tag) = governed(
        "approve",
        json!({"approval": {"required": true, "distinctFromAuthor": true}}),
    )
    .await;
    let _operator = Operator::for_namespace(ns.name()).await;
    let (alice, bob, mallory) = (
        as_user(&ns, "alice").await,
        as_user(&ns, "bob").await,
        as_user(&ns, "mallory").await,
    );

    // Alice writes revision 1; it waits for an approval.
    apply(&alice, &release("v1", blue_green("0s"), json!({}))).await;
    let r = wait_phase(&ns.api(), 1, Phase::AwaitingApproval, LONG).await;
    assert_eq!(
        r.annotations().get("lockkeeper.dev/author"),
        Some(&user(&ns, "alice")),
        "admission stamped the author"
    );

    let started = Instant::now();
    let no_verb = refused(
        &mallory,
        json!({"lockkeeper.dev/approve": "1", "lockkeeper.dev/approver": user(&ns, "mallory")}),
    )
    .await;
    println!(
        "without the approve verb ({:.2}s until enforced): {no_verb}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        no_verb.contains("may not approve") && no_verb.contains("approve on releases"),
        "{no_verb}"
    );
    let someone_else = refused(
        &bob,
        json!({"lockkeeper.dev/approve": "1", "lockkeeper.dev/approver": user(&ns, "alice")}),
    )
    .await;
    println!("naming someone else: {someone_else}");
    assert!(someone_else.contains("only yourself"), "{someone_else}");
    let own = refused(
        &alice,
        json!({"lockkeeper.dev/approve": "1", "lockkeeper.dev/approver": user(&ns, "alice")}),
    )
    .await;
    println!("the author approving: {own}");
    assert!(
        own.contains("four eyes") && own.contains(&env.name_any()),
        "{own}"
    );
    let forged = refused(&mallory, json!({"lockkeeper.dev/author": user(&ns, "bob")})).await;
    println!("forging the author: {forged}");
    assert!(forged.contains("lockkeeper.dev/author"), "{forged}");

    // Bob approves revision 1.
    let approved_at = Instant::now();
    annotate(
        &bob,
        json!({"lockkeeper.dev/approve": "1", "lockkeeper.dev/approver": user(&ns, "bob")}),
    )
    .await
    .unwrap_or_else(|e| panic!("bob's approval: {e}"));
    let r = wait_phase(&ns.api(), 1, Phase::Ready, LONG).await;
    println!(
        "approved → Ready in {:.2}s",
        approved_at.elapsed().as_secs_f64()
    );
    let status = r.status.unwrap_or_default();
    assert_eq!(status.history[0].approved_by, Some(user(&ns, "bob")));

    // Revision 2: the approval of revision 1 does not carry over.
    apply(&alice, &release("v2", blue_green("0s"), json!({}))).await;
    let r = wait_phase(&ns.api(), 2, Phase::AwaitingApproval, LONG).await;
    let message = r
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reconciling"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    println!("revision 2: {message}");
    assert!(
        message.contains("the approval on record is for revision 1"),
        "{message}"
    );
    assert_stays(
        &ns.api::<Release>(),
        "shop",
        Duration::from_secs(3),
        |r: &Release| phase(r) == Some(Phase::AwaitingApproval),
    )
    .await;
    annotate(
        &bob,
        json!({"lockkeeper.dev/approve": "2", "lockkeeper.dev/approver": user(&ns, "bob")}),
    )
    .await
    .unwrap_or_else(|e| panic!("bob's approval of revision 2: {e}"));
    wait_phase(&ns.api(), 2, Phase::Ready, LONG).await;
    let _ = Api::<Environment>::all(cluster().await.client())
        .delete(&env.name_any(), &Default::default())
        .await;
    ns.cleanup().await;
}

/// A production revision starts only once staging runs the same build
/// Ready for the soak time; another build in staging does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_waits_for_the_same_build_ready_upstream_for_the_soak() {
    install_crds().await;
    let staging_tag = format!("s{}", crate::support::free_port());
    let prod_tag = format!("p{}", crate::support::free_port());
    let staging = TestNamespace::with_labels(
        "staging",
        &[("e2e.lockkeeper.dev/env", staging_tag.as_str())],
    )
    .await;
    let prod =
        TestNamespace::with_labels("prod", &[("e2e.lockkeeper.dev/env", prod_tag.as_str())]).await;
    for ns in [&staging, &prod] {
        service(ns, "shop").await;
        service(ns, "shop-preview").await;
    }
    let envs = Api::<Environment>::all(cluster().await.client());
    let staging_env = format!("{staging_tag}-staging");
    let make = |name: &str, tag: &str, extra: Value| {
        let mut spec =
            json!({"namespaceSelector": {"matchLabels": {"e2e.lockkeeper.dev/env": tag}}});
        crate::runbook::merge(&mut spec, extra);
        Environment::new(
            name,
            serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}")),
        )
    };
    let soak = Duration::from_secs(4);
    for env in [
        make(&staging_env, &staging_tag, json!({})),
        make(
            &format!("{prod_tag}-production"),
            &prod_tag,
            json!({"promotion": {"from": [staging_env], "soak": "4s"}}),
        ),
    ] {
        envs.create(&PostParams::default(), &env)
            .await
            .unwrap_or_else(|e| panic!("creating Environment {}: {e}", env.name_any()));
    }
    let _operator = Operator::start(OperatorOptions {
        namespaces: vec![staging.name().to_owned(), prod.name().to_owned()],
        ..OperatorOptions::default()
    })
    .await;
    let (staging_api, prod_api) = (staging.api::<Release>(), prod.api::<Release>());

    // Staging runs v1; production asks for v2, another build: it waits.
    apply(&staging_api, &release("v1", blue_green("0s"), json!({}))).await;
    wait_phase(&staging_api, 1, Phase::Ready, LONG).await;
    apply(&prod_api, &release("v2", blue_green("0s"), json!({}))).await;
    let waiting = wait_for(&prod_api, "shop", LONG, |r: &Release| {
        phase(r) == Some(Phase::Waiting)
            && r.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.message.contains("another build"))
            })
    })
    .await;
    let message = waiting
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Reconciling"))
        .map(|c| c.message)
        .unwrap_or_default();
    println!("production while staging runs v1: {message}");
    assert_stays(&prod_api, "shop", Duration::from_secs(3), |r: &Release| {
        phase(r) == Some(Phase::Waiting)
    })
    .await;

    // Staging gets v2 Ready; production follows after the soak.
    apply(&staging_api, &release("v2", blue_green("0s"), json!({}))).await;
    wait_phase(&staging_api, 2, Phase::Ready, LONG).await;
    let staging_ready = Instant::now();
    let r = wait_phase(&prod_api, 1, Phase::Ready, LONG).await;
    println!(
        "staging Ready → production Ready: {:.2}s (soak {soak:?})",
        staging_ready.elapsed().as_secs_f64()
    );
    let upstream = staging_api
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default();
    let ready_since = upstream.history[0]
        .finished_at
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("staging has no Ready time"));
    let promote = r
        .status
        .unwrap_or_default()
        .steps
        .into_iter()
        .find(|s| s.name == "Promote")
        .unwrap_or_else(|| panic!("no Promote step"));
    let passed = promote
        .finished_at
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("the gate never passed"));
    let waited = passed.duration_since(ready_since);
    println!(
        "promotion gate: {:?}; passed {:.2}s after staging became Ready",
        promote.message,
        waited.as_secs_f64()
    );
    assert!(
        waited.as_secs_f64() >= soak.as_secs_f64(),
        "the soak was not honoured: {waited:?}"
    );
    for name in [staging_env, format!("{prod_tag}-production")] {
        let _ = envs.delete(&name, &Default::default()).await;
    }
    staging.cleanup().await;
    prod.cleanup().await;
}

/// An emergency start inside a freeze window needs the approve verb, is
/// recorded in the history and announced with a Warning event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_override_needs_an_approver_and_is_recorded() {
    let (ns, env, _tag) = governed(
        "override",
        json!({"freeze": [{"schedule": "* * * * *", "duration": "1h", "reason": "year-end freeze"}]}),
    )
    .await;
    let _operator = Operator::for_namespace(ns.name()).await;
    let (bob, mallory) = (as_user(&ns, "bob").await, as_user(&ns, "mallory").await);
    apply(&bob, &release("v1", blue_green("0s"), json!({}))).await;
    wait_for(&ns.api::<Release>(), "shop", LONG, |r: &Release| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == "Frozen" && c.message.contains("override-freeze=1"))
        })
    })
    .await;
    let refusal = refused(&mallory, json!({"lockkeeper.dev/override-freeze": "1", "lockkeeper.dev/override-by": user(&ns, "mallory")})).await;
    println!("override without the approve verb: {refusal}");
    assert!(refusal.contains("override its freeze"), "{refusal}");
    annotate(&bob, json!({"lockkeeper.dev/override-freeze": "1", "lockkeeper.dev/override-by": user(&ns, "bob")}))
        .await
        .unwrap_or_else(|e| panic!("bob's override: {e}"));
    let r = wait_phase(&ns.api(), 1, Phase::Ready, LONG).await;
    let recorded = r.status.unwrap_or_default().history[0]
        .freeze_overridden_by
        .clone();
    println!("recorded: {recorded:?}");
    assert!(
        recorded
            .as_deref()
            .is_some_and(|o| o.contains(&user(&ns, "bob")) && o.contains("year-end freeze")),
        "{recorded:?}"
    );
    let events = events_about(&ns.api::<Event>(), "Release", "shop")
        .await
        .unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e.reason == "FreezeOverridden" && e.type_ == "Warning")
    );
    let _ = Api::<Environment>::all(cluster().await.client())
        .delete(&env.name_any(), &Default::default())
        .await;
    ns.cleanup().await;
}

/// Environments promoting from each other (a → b → a) can never promote
/// anything: the Release stalls naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_cycle_stalls_naming_the_environments() {
    install_crds().await;
    let tag = format!("c{}", crate::support::free_port());
    let ns = TestNamespace::with_labels("cycle", &[("e2e.lockkeeper.dev/env", tag.as_str())]).await;
    service(&ns, "shop").await;
    service(&ns, "shop-preview").await;
    let envs = Api::<Environment>::all(cluster().await.client());
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    for (name, from, selector) in [
        (
            &a,
            &b,
            json!({"matchLabels": {"e2e.lockkeeper.dev/env": tag}}),
        ),
        (
            &b,
            &a,
            json!({"matchLabels": {"e2e.lockkeeper.dev/env": format!("{tag}-none")}}),
        ),
    ] {
        let env = Environment::new(
            name,
            serde_json::from_value(
                json!({"namespaceSelector": selector, "promotion": {"from": [from]}}),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        envs.create(&PostParams::default(), &env)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let _operator = Operator::for_namespace(ns.name()).await;
    let api = ns.api::<Release>();
    apply(&api, &release("v1", blue_green("0s"), json!({}))).await;
    let r = wait_for(&api, "shop", LONG, |r: &Release| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        })
    })
    .await;
    let message = r
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Stalled"))
        .map(|c| c.message)
        .unwrap_or_default();
    println!("{message}");
    assert!(message.contains(&format!("{a} → {b} → {a}")), "{message}");
    for name in [a, b] {
        let _ = envs.delete(&name, &Default::default()).await;
    }
    ns.cleanup().await;
}
