//! The install a user makes: the Helm chart linted, rendered and accepted by
//! the real API server, installed, upgraded, and its ServiceAccount's RBAC
//! proven sufficient by running a whole blue/green release with the
//! operator binary authenticated only by that ServiceAccount's token. Also
//! the plain manifests, the examples, the chart's values schema and the
//! Argo CD health check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use lockkeeper::api::{Phase, Release};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::delete_releases;
use crate::runbook::{apply, release, service, wait_phase};
use crate::support::{
    BEHAVIOR_LABEL, Operator, OperatorOptions, SnapshotDouble, TestNamespace, WebhookReceiver,
    cluster, create_pvc, create_snapshot_class, install_crds, poll_until, repo_root,
    snapshot_crds_present, wait_for,
};

const CHART: &str = "charts/lockkeeper";
const LONG: Duration = Duration::from_secs(90);

/// The directory with the helm and kubectl built for the local control
/// plane (or named by `e2e/cluster/build.sh --print` for an external one).
fn bin_dir() -> PathBuf {
    let output = Command::new(repo_root().join("e2e/cluster/build.sh"))
        .arg("--print")
        .output()
        .unwrap_or_else(|e| panic!("running e2e/cluster/build.sh --print: {e}"));
    assert!(
        output.status.success(),
        "e2e/cluster/build.sh --print failed"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// The result of running a tool: exit status, stdout, stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tool` (helm or kubectl) from the repository root, against
/// `kubeconfig` when given.
fn run(tool: &str, args: &[&str], kubeconfig: Option<&Path>) -> Run {
    let mut command = Command::new(bin_dir().join(tool));
    command.args(args).current_dir(repo_root());
    // Keep helm's caches and config out of the user's home.
    let helm_home = std::env::temp_dir().join("lockkeeper-helm-home");
    command
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"));
    match kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        None => command.env_remove("KUBECONFIG"),
    };
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {tool} {}: {e}", args.join(" ")));
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a tool and panics with its output unless it succeeds.
fn run_ok(tool: &str, args: &[&str], kubeconfig: Option<&Path>) -> String {
    let result = run(tool, args, kubeconfig);
    assert!(
        result.ok,
        "{tool} {} failed:\n{}\n{}",
        args.join(" "),
        result.stdout,
        result.stderr
    );
    result.stdout
}

/// The chart rendered with `args` added to `helm template`.
fn render(release: &str, namespace: &str, args: &[&str]) -> String {
    let mut all = vec!["template", release, CHART, "--namespace", namespace];
    all.extend_from_slice(args);
    run_ok("helm", &all, None)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("parsing rendered YAML: {e}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn helm_lint_passes() {
    let result = run("helm", &["lint", "--strict", CHART], None);
    println!(
        "helm lint --strict {CHART}:\n{}{}",
        result.stdout, result.stderr
    );
    assert!(result.ok, "helm lint failed");
    assert!(
        result.stdout.contains("0 chart(s) failed"),
        "{}",
        result.stdout
    );
}

#[test]
fn invalid_values_are_rejected_by_the_schema_with_a_clear_message() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("no replicas", &["--set", "replicaCount=0"], "/replicaCount"),
        (
            "an unknown pull policy",
            &["--set", "image.pullPolicy=Sometimes"],
            "value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        (
            "an unknown log format",
            &["--set", "logFormat=xml"],
            "value must be one of 'text', 'json'",
        ),
        (
            "a privileged metrics port",
            &["--set", "metrics.port=80"],
            "/metrics/port",
        ),
        (
            "a misspelt value",
            &["--set", "replicas=3"],
            "additional properties 'replicas' not allowed",
        ),
        (
            "privilege escalation",
            &["--set", "securityContext.allowPrivilegeEscalation=true"],
            "/securityContext/allowPrivilegeEscalation",
        ),
        (
            "a duration without a unit",
            &["--set-string", "leaderElection.leaseDuration=15"],
            "/leaderElection/leaseDuration",
        ),
        (
            "both PDB bounds",
            &["--set", "podDisruptionBudget.maxUnavailable=1"],
            "set either minAvailable or maxUnavailable, not both",
        ),
    ];
    let mut failures = Vec::new();
    for (what, args, expect) in cases {
        let mut all = vec!["template", "lockkeeper", CHART];
        all.extend_from_slice(args);
        let result = run("helm", &all, None);
        if result.ok {
            failures.push(format!("{what}: accepted"));
        } else if !result.stderr.contains(expect) {
            failures.push(format!(
                "{what}: rejected without {expect:?}:\n{}",
                result.stderr
            ));
        } else {
            println!("{what}: {}", result.stderr.trim().replace('\n', " "));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One RBAC rule: (kind of role, apiGroups, resources, verbs).
type Rule = (String, Vec<String>, Vec<String>, Vec<String>);

/// Every RBAC rule the chart renders.
fn rbac_rules(rendered: &str) -> Vec<Rule> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    documents(rendered)
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .flat_map(|d| {
            let kind = d["kind"].as_str().unwrap_or_default().to_owned();
            d["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |rule| {
                    (
                        kind.clone(),
                        strings(&rule["apiGroups"]),
                        strings(&rule["resources"]),
                        strings(&rule["verbs"]),
                    )
                })
        })
        .collect()
}

#[test]
fn rbac_has_no_wildcards_and_is_listed_per_resource() {
    let rendered = render("lockkeeper", "lockkeeper-system", &[]);
    let rules = rbac_rules(&rendered);
    assert!(!rules.is_empty(), "the chart renders no RBAC rules");
    let mut wildcards = Vec::new();
    let mut per_resource: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, groups, resources, verbs) in &rules {
        for field in [groups, resources, verbs] {
            if field.iter().any(|s| s.contains('*')) {
                wildcards.push(format!("{kind}: {groups:?} {resources:?} {verbs:?}"));
            }
        }
        for group in groups {
            for resource in resources {
                let name = if group.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}.{group}")
                };
                per_resource
                    .entry(format!("{name} ({kind})"))
                    .or_default()
                    .extend(verbs.iter().cloned());
            }
        }
    }
    let verbs: usize = per_resource.values().map(Vec::len).sum();
    println!(
        "{} RBAC rules, {} resources, {verbs} verbs:",
        rules.len(),
        per_resource.len()
    );
    for (resource, verbs) in &per_resource {
        println!("  {resource:<45} {}", verbs.join(", "));
    }
    assert!(
        wildcards.is_empty(),
        "wildcards in RBAC rules:\n{}",
        wildcards.join("\n")
    );
    // No rule grants what the operator never does.
    for forbidden in ["escalate", "bind", "impersonate"] {
        assert!(
            !per_resource
                .iter()
                .any(|(r, v)| r.starts_with(&format!("{forbidden} "))
                    || v.iter().any(|v| v == forbidden)),
            "the chart grants {forbidden}"
        );
    }
}

#[test]
fn the_chart_crds_and_the_plain_install_are_in_sync() {
    let root = repo_root();
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("reading {p}: {e}"))
    };
    assert!(
        read("crds/lockkeeper.dev.yaml") == read("charts/lockkeeper/crds/lockkeeper.dev.yaml"),
        "charts/lockkeeper/crds is out of date: run 'make manifests'"
    );
    let rendered = format!(
        "# Generated by `make manifests` from charts/lockkeeper; do not edit.\n{}",
        render("lockkeeper", "lockkeeper-system", &["--include-crds"])
    );
    assert!(
        read("manifests/install/lockkeeper.yaml") == rendered,
        "manifests/install/lockkeeper.yaml is out of date: run 'make manifests'"
    );
}

/// Evaluates the Argo CD health check on a Release object.
fn argocd_health(script: &str, object: &Value) -> (String, String) {
    use mlua::{LuaSerdeExt, SerializeOptions, Table};
    let lua = mlua::Lua::new();
    // As Argo CD hands objects to Lua: JSON null is nil.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua
        .to_value_with(object, options)
        .unwrap_or_else(|e| panic!("converting the Release for Lua: {e}"));
    lua.globals()
        .set("obj", obj)
        .unwrap_or_else(|e| panic!("setting obj: {e}"));
    let result: Table = lua
        .load(script)
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("running the health check: {e}"));
    let field = |name: &str| -> String {
        result
            .get::<Option<String>>(name)
            .unwrap_or_else(|e| panic!("reading hs.{name}: {e}"))
            .unwrap_or_default()
    };
    (field("status"), field("message"))
}

fn health_script() -> String {
    let path = repo_root().join("e2e/gitops/argocd/health.lua");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn argocd_health_check_matches_the_sample_statuses() {
    let dir = repo_root().join("e2e/gitops/argocd");
    let script = health_script();
    let tests: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("health_test.yaml"))
            .unwrap_or_else(|e| panic!("reading health_test.yaml: {e}")),
    )
    .unwrap_or_else(|e| panic!("parsing health_test.yaml: {e}"));
    let cases = tests["tests"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 8, "too few sample statuses");
    let mut failures = Vec::new();
    for case in &cases {
        let input = case["inputPath"].as_str().unwrap_or_default();
        let object: Value = serde_yaml::from_str(
            &std::fs::read_to_string(dir.join(input))
                .unwrap_or_else(|e| panic!("reading {input}: {e}")),
        )
        .unwrap_or_else(|e| panic!("parsing {input}: {e}"));
        let (status, message) = argocd_health(&script, &object);
        let want = &case["healthStatus"];
        println!("{input:<40} {status:<12} {message}");
        if want["status"] != status.as_str() || want["message"] != message.as_str() {
            failures.push(format!(
                "{input}: got {status} {message:?}, want {} {}",
                want["status"], want["message"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// kstatus's verdict on a custom resource (sigs.k8s.io/cli-utils
/// pkg/kstatus, the rules Flux's health checks use): InProgress until the
/// current generation is observed or while Reconciling is True, Failed
/// while Stalled is True, Current otherwise.
fn kstatus(object: &Value) -> &'static str {
    let generation = object["metadata"]["generation"].as_i64();
    let observed = object["status"]["observedGeneration"].as_i64();
    if generation.is_some() && observed.is_none_or(|o| Some(o) < generation) {
        return "InProgress";
    }
    let condition = |type_: &str| {
        object["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
    };
    if condition("Reconciling").as_deref() == Some("True") {
        "InProgress"
    } else if condition("Stalled").as_deref() == Some("True") {
        "Failed"
    } else {
        "Current"
    }
}

/// The live Release as JSON, with its health in Argo CD and kstatus.
async fn health_of(api: &Api<Release>) -> (String, String, &'static str) {
    let live = api
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("reading Release shop: {e}"));
    let object = serde_json::to_value(&live).unwrap_or_else(|e| panic!("{e}"));
    let (status, message) = argocd_health(&health_script(), &object);
    (status, message, kstatus(&object))
}

#[tokio::test]
async fn examples_are_accepted_by_the_api_server() {
    install_crds().await;
    let ns = TestNamespace::new("install-examples").await;
    let kubeconfig = cluster().await.kubeconfig_path();
    for file in [
        "manifests/examples/environments.yaml",
        "manifests/examples/release-blue-green.yaml",
        "manifests/examples/release-data-safe.yaml",
    ] {
        let out = run_ok(
            "kubectl",
            &["apply", "--dry-run=server", "-n", ns.name(), "-f", file],
            Some(kubeconfig),
        );
        print!("{file}:\n{out}");
    }
    ns.cleanup().await;
}

/// Waits for revision `revision` to reach `phase`, failing at once with the
/// refusal when the operator's log shows the API server forbade it something.
async fn wait_phase_or_refusal(
    api: &Api<Release>,
    operator: &Operator,
    revision: i64,
    phase: Phase,
) -> Release {
    poll_until(&format!("revision {revision} {phase:?}"), LONG, || async {
        if let Some(line) = operator
            .log()
            .lines()
            .find(|l| l.to_lowercase().contains("forbidden"))
        {
            panic!("the chart's ServiceAccount was refused:\n{line}");
        }
        let release = api
            .get("shop")
            .await
            .map_err(|e| format!("reading Release shop: {e}"))?;
        let status = release.status.clone().unwrap_or_default();
        if status.revision == Some(revision) && status.phase == Some(phase) {
            Ok(release)
        } else {
            Err(format!("revision {:?} {:?}", status.revision, status.phase))
        }
    })
    .await
}

/// A kubeconfig for the admin's cluster that authenticates with `token`
/// and nothing else.
fn token_kubeconfig(admin: &Path, token: &str, path: &Path) {
    let config =
        Kubeconfig::read_from(admin).unwrap_or_else(|e| panic!("reading {}: {e}", admin.display()));
    let context_name = config
        .current_context
        .clone()
        .unwrap_or_else(|| panic!("{} has no current context", admin.display()));
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_else(|| panic!("context {context_name} not found"));
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .unwrap_or_else(|| panic!("cluster {cluster_name} not found"));
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [{"name": "service-account", "context": {"cluster": "cluster", "user": "service-account"}}],
        "current-context": "service-account",
    });
    let yaml = serde_yaml::to_string(&kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    write_file(path, &yaml);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_and_its_service_account_runs_a_blue_green_release() {
    install_crds().await;
    let system = TestNamespace::new("install-system").await;
    let app = TestNamespace::new("install-app").await;
    let admin = cluster().await.kubeconfig_path().to_path_buf();
    // The name carries the namespace's suffix: ClusterRoles of parallel
    // runs must not collide. It contains "lockkeeper", so the chart uses it
    // as the full name.
    let suffix = system.name().rsplit('-').next().unwrap_or("x").to_owned();
    let name = format!("lockkeeper-{suffix}");
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));

    // helm template output is accepted by the real API server.
    let rendered = render(&name, system.name(), &["--include-crds"]);
    let rendered_path = scratch.path().join("rendered.yaml");
    write_file(&rendered_path, &rendered);
    let dry_run = run_ok(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "-n",
            system.name(),
            "-f",
            &rendered_path.to_string_lossy(),
        ],
        Some(&admin),
    );
    println!("kubectl apply --dry-run=server:\n{dry_run}");

    // Installed into its namespace. The CRDs exist already, applied by
    // another field manager (as after `kubectl apply --server-side -f
    // crds/`): helm's server-side apply of crds/ would conflict with it,
    // so they are left as they are (the README's advice for that case).
    let install = run_ok(
        "helm",
        &[
            "install",
            &name,
            CHART,
            "--namespace",
            system.name(),
            "--skip-crds",
            "--wait",
            "--timeout",
            "2m",
        ],
        Some(&admin),
    );
    println!("helm install:\n{install}");
    let account = name.clone();
    let lease_name = format!("{name}-leader");
    let accounts: Api<ServiceAccount> = system.api();
    wait_for(&accounts, &account, LONG, |_| true).await;

    // The operator out of cluster, authenticated only by a token of the
    // chart's ServiceAccount, electing itself on the chart's Lease.
    let token = cluster()
        .await
        .service_account_token(system.name(), &account)
        .await;
    let kubeconfig = scratch.path().join("kubeconfig");
    token_kubeconfig(&admin, &token, &kubeconfig);
    let operator = Operator::start(OperatorOptions {
        namespaces: vec![app.name().to_owned()],
        leader_lease: Some((system.name().to_owned(), lease_name.clone())),
        identity: Some("install-test".to_owned()),
        kubeconfig: Some(kubeconfig),
        // Cleanup of finished Jobs runs within the test too.
        extra: vec!["--finished-job-ttl=1s".to_owned()],
    })
    .await;

    service(&app, "shop").await;
    service(&app, "shop-preview").await;
    let api: Api<Release> = app.api();
    let blue_green = |auto: bool| {
        json!({"type": "BlueGreen", "blueGreen": {
            "activeService": "shop", "previewService": "shop-preview",
            "scaleDownDelay": "1s", "autoCutover": auto}})
    };

    // v1: straight to Ready.
    apply(&api, &release("v1", blue_green(true), json!({}))).await;
    let _ = wait_phase_or_refusal(&api, &operator, 1, Phase::Ready).await;
    let (health, message, kstatus) = health_of(&api).await;
    println!("v1: Argo CD {health} ({message}), kstatus {kstatus}");
    assert_eq!((health.as_str(), kstatus), ("Healthy", "Current"));

    // v2 waits for a promote request: Suspended in Argo CD.
    apply(&api, &release("v2", blue_green(false), json!({}))).await;
    let _ = wait_phase_or_refusal(&api, &operator, 2, Phase::CuttingOver).await;
    let (health, message) = poll_until("Argo CD health Suspended", LONG, || async {
        let (health, message, _) = health_of(&api).await;
        if health == "Suspended" {
            Ok((health, message))
        } else {
            Err(format!("{health}: {message}"))
        }
    })
    .await;
    println!("v2 before promote: Argo CD {health} ({message})");

    // Upgrading the chart (a changed value) leaves the Release working.
    let upgrade = run_ok(
        "helm",
        &[
            "upgrade",
            &name,
            CHART,
            "--namespace",
            system.name(),
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "2m",
        ],
        Some(&admin),
    );
    println!("helm upgrade:\n{upgrade}");

    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"lockkeeper.dev/promote": "2"}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("requesting the promotion: {e}"));
    let _ = wait_phase_or_refusal(&api, &operator, 2, Phase::Ready).await;
    let ready = wait_phase(&api, 2, Phase::Ready, LONG).await;
    let status = ready.status.unwrap_or_default();
    assert_eq!(status.active_color.map(|c| c.as_str()), Some("green"));
    let selector = app
        .api::<Service>()
        .get("shop")
        .await
        .unwrap_or_else(|e| panic!("reading Service shop: {e}"))
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert_eq!(
        selector.get("lockkeeper.dev/color").map(String::as_str),
        Some("green")
    );
    let (health, message, kstatus) = health_of(&api).await;
    println!("v2: Argo CD {health} ({message}), kstatus {kstatus}");
    assert_eq!((health.as_str(), kstatus), ("Healthy", "Current"));

    // v3 and v4 use everything a data-safe release does (backup copies of a
    // ConfigMap and a Secret, per-revision config and its check Job, a
    // migration and its rollback, a failed Job's pod and log, retention):
    // v3's migration fails and is undone, v4 goes through and prunes.
    let settings: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "shop-settings"}, "data": {"mode": "classic"}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    app.api::<ConfigMap>()
        .create(&PostParams::default(), &settings)
        .await
        .unwrap_or_else(|e| panic!("creating shop-settings: {e}"));
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop-db"}, "stringData": {"password": "s3cret"}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    app.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating shop-db: {e}"));
    // A claim snapshotted by the (test double) CSI snapshotter, and a
    // webhook whose URL is read from a Secret.
    let _crds = snapshot_crds_present().await;
    let class = format!("lk-{}", app.name());
    create_snapshot_class(&class, false).await;
    let _double = SnapshotDouble::start(app.name()).await;
    create_pvc(app.name(), "shop-data", "1Gi", None).await;
    let receiver = WebhookReceiver::start().await;
    let hooks: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hooks"}, "stringData": {"url": receiver.url("/events")}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    app.api::<Secret>()
        .create(&PostParams::default(), &hooks)
        .await
        .unwrap_or_else(|e| panic!("creating Secret hooks: {e}"));
    let data_safe = |fate: &str| {
        let task = |labels: Value| {
            json!({"backoffLimit": 0, "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "task"}]}}})
        };
        json!({
            "notify": [{"name": "events", "webhook": {"webhookSecretRef": {"name": "hooks", "key": "url"}}}],
            "backup": {"configMaps": ["shop-settings"], "secrets": ["shop-db"], "keep": 1,
                       "volumes": [{"persistentVolumeClaim": "shop-data", "volumeSnapshotClassName": class}]},
            "config": {"configMaps": [{"name": "shop-config", "data": {"a": "1"}}],
                       "check": {"command": ["app", "--check-config"]}},
            "migration": {"job": task(json!({BEHAVIOR_LABEL: fate})),
                          "rollback": task(json!({}))},
        })
    };
    apply(&api, &release("v3", blue_green(true), data_safe("fail"))).await;
    let rolled_back = wait_phase_or_refusal(&api, &operator, 3, Phase::RolledBack).await;
    let status = rolled_back.status.unwrap_or_default();
    let undone = status.history[0].undone.clone();
    let migrate = status
        .steps
        .iter()
        .find(|s| s.name == "Migrate")
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    println!("v3 migration: {migrate}");
    assert!(
        !migrate.to_lowercase().contains("forbidden"),
        "reading the failed pod was refused: {migrate}"
    );
    println!("v3 rolled back, undone: {undone:?}");
    assert!(
        undone
            .iter()
            .any(|u| u.contains("rolled back by shop-migrate-rollback-r3"))
    );
    assert!(
        undone
            .iter()
            .any(|u| u.contains("restored ConfigMap shop-settings, Secret shop-db"))
    );
    apply(&api, &release("v4", blue_green(true), data_safe("ok"))).await;
    let _ = wait_phase_or_refusal(&api, &operator, 4, Phase::Ready).await;
    // Notified (the Secret was read), and the finished Jobs of earlier
    // revisions cleaned up (deleted) after their TTL.
    let requests = receiver.wait_for_requests(2, LONG).await;
    println!(
        "notifications received (RolledBack of v3, Ready of v4): {}",
        requests.len()
    );
    poll_until("finished Jobs of revision 3 deleted", LONG, || async {
        let left = app
            .api::<k8s_openapi::api::batch::v1::Job>()
            .list(&kube::api::ListParams::default().labels("lockkeeper.dev/revision=3"))
            .await
            .map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} Jobs of revision 3 left", left.items.len()))
        }
    })
    .await;
    let events = crate::support::events_about(&app.api(), "Release", "shop")
        .await
        .unwrap_or_default();
    assert!(
        events
            .iter()
            .all(|e| !e.note.to_lowercase().contains("forbidden")),
        "something was refused: {events:#?}"
    );

    // It acted as the leader of the chart's Lease.
    let lease = system
        .api::<Lease>()
        .get(&lease_name)
        .await
        .unwrap_or_else(|e| panic!("reading Lease {lease_name}: {e}"));
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("install-test")
    );
    let log = operator.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );

    // Deleting the Release needs the operator's finalizer removal, which
    // the ServiceAccount must be allowed too.
    delete_releases(&app, LONG).await;
    drop(operator);
    run_ok(
        "helm",
        &["uninstall", &name, "--namespace", system.name(), "--wait"],
        Some(&admin),
    );
    println!("chart {name} uninstalled");
    app.cleanup().await;
    system.cleanup().await;
}
