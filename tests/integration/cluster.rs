//! The local control plane does what later tests rely on: controllers,
//! scheduling, kwok's pod behaviours, RBAC, garbage collection, admission
//! policies and Prometheus scraping. Each test runs in its own namespace.
//!
//! The workloads also carry what a real kubelet needs to behave the same
//! (commands that exit 1, a failing readiness probe), so these tests hold on
//! an external cluster as well.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::support::{
    BEHAVIOR_LABEL, FAIL, HttpTarget, NEVER_READY, RESTARTING, TestNamespace, assert_stays,
    cluster, install_crds, poll_until, wait_for, wait_for_deletion,
};

/// Generous: the machines running these are small and shared.
const TIMEOUT: Duration = Duration::from_secs(90);
const BUSYBOX: &str = "busybox:1.36";

fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object literal")
}

fn condition_is(conditions: Option<&[impl HasCondition]>, type_: &str, status: &str) -> bool {
    conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_() == type_ && c.status() == status)
}

trait HasCondition {
    fn type_(&self) -> &str;
    fn status(&self) -> &str;
}

impl HasCondition for k8s_openapi::api::core::v1::PodCondition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

impl HasCondition for k8s_openapi::api::batch::v1::JobCondition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

fn pod_is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref());
    condition_is(conditions, "Ready", "True")
}

fn pod_is_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
}

fn job_has_condition(job: &Job, type_: &str) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_deref());
    condition_is(conditions, type_, "True")
}

fn job(name: &str, behavior: Option<&str>, exit_code: u8) -> Job {
    let labels = behavior.map_or_else(|| json!({}), |b| json!({ BEHAVIOR_LABEL: b }));
    object(json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "main",
                        "image": BUSYBOX,
                        "command": ["sh", "-c", format!("exit {exit_code}")],
                    }],
                },
            },
        },
    }))
}

#[tokio::test]
async fn deployment_reaches_three_ready_pods() {
    let ns = TestNamespace::new("deployment").await;
    let deployments: Api<Deployment> = ns.api();
    let deployment: Deployment = object(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.k8s.io/pause:3.10" }] },
            },
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating the Deployment");

    wait_for(&deployments, "web", TIMEOUT, |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;

    let pods: Api<Pod> = ns.api();
    let pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("listing the Deployment's pods");
    let ready: Vec<&Pod> = pods.items.iter().filter(|p| pod_is_ready(p)).collect();
    assert_eq!(ready.len(), 3, "ready pods: {ready:#?}");
    for pod in ready {
        let status = pod.status.as_ref().expect("a ready pod has a status");
        assert!(status.pod_ip.is_some(), "a ready pod has an IP: {pod:#?}");
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn job_runs_to_completion() {
    let ns = TestNamespace::new("job-complete").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &job("migrate", None, 0))
        .await
        .expect("creating the Job");

    let done = wait_for(&jobs, "migrate", TIMEOUT, |j| {
        job_has_condition(j, "Complete") || job_has_condition(j, "Failed")
    })
    .await;
    assert!(job_has_condition(&done, "Complete"), "{done:#?}");
    assert_eq!(done.status.and_then(|s| s.succeeded), Some(1));
    ns.cleanup().await;
}

#[tokio::test]
async fn job_labelled_fail_fails() {
    let ns = TestNamespace::new("job-fail").await;
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &job("migrate", Some(FAIL), 1))
        .await
        .expect("creating the Job");

    let done = wait_for(&jobs, "migrate", TIMEOUT, |j| {
        job_has_condition(j, "Complete") || job_has_condition(j, "Failed")
    })
    .await;
    assert!(job_has_condition(&done, "Failed"), "{done:#?}");

    let pods: Api<Pod> = ns.api();
    let pods = pods
        .list(&ListParams::default().labels("job-name=migrate"))
        .await
        .expect("listing the Job's pods");
    let exit_codes: Vec<i32> = pods
        .items
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
        .collect();
    assert_eq!(exit_codes, vec![1], "pods: {:#?}", pods.items);
    ns.cleanup().await;
}

#[tokio::test]
async fn never_ready_pod_stays_unready() {
    let ns = TestNamespace::new("never-ready").await;
    let pods: Api<Pod> = ns.api();
    let pod: Pod = object(json!({
        "metadata": { "name": "stuck", "labels": { BEHAVIOR_LABEL: NEVER_READY } },
        "spec": {
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "command": ["sleep", "3600"],
                "readinessProbe": { "exec": { "command": ["false"] }, "periodSeconds": 1 },
            }],
        },
    }));
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("creating the pod");

    wait_for(&pods, "stuck", TIMEOUT, pod_is_running).await;
    let last = assert_stays(&pods, "stuck", Duration::from_secs(5), |p| {
        pod_is_running(p) && !pod_is_ready(p)
    })
    .await;
    assert!(!pod_is_ready(&last));
    ns.cleanup().await;
}

#[tokio::test]
async fn restarting_pod_restart_count_climbs() {
    let ns = TestNamespace::new("restarting").await;
    let pods: Api<Pod> = ns.api();
    let pod: Pod = object(json!({
        "metadata": { "name": "crashy", "labels": { BEHAVIOR_LABEL: RESTARTING } },
        "spec": {
            "containers": [{ "name": "main", "image": BUSYBOX, "command": ["sh", "-c", "exit 1"] }],
        },
    }));
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("creating the pod");

    let restarts = |p: &Pod| {
        p.status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    };
    let crashed = wait_for(&pods, "crashy", TIMEOUT, |p| restarts(p) >= 1).await;
    let first = restarts(&crashed);
    let later = wait_for(&pods, "crashy", TIMEOUT, |p| restarts(p) >= first + 2).await;
    assert!(!pod_is_ready(&later), "{later:#?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn service_account_without_rbac_is_forbidden_while_admin_lists_pods() {
    let cluster = cluster().await;
    let ns = TestNamespace::new("rbac").await;
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "reader" } })),
        )
        .await
        .expect("creating the ServiceAccount");

    ns.api::<Pod>()
        .list(&ListParams::default())
        .await
        .expect("the admin lists pods");

    let impersonated: Api<Pod> = Api::namespaced(
        cluster.client_as_service_account(ns.name(), "reader"),
        ns.name(),
    );
    let token_client = cluster.token_for_service_account(ns.name(), "reader").await;
    let with_token: Api<Pod> = Api::namespaced(token_client.clone(), ns.name());
    for (how, api) in [("impersonated", &impersonated), ("token", &with_token)] {
        match api.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            other => panic!("listing pods as the ServiceAccount ({how}) gave {other:?}"),
        }
    }

    // The token really authenticates as the ServiceAccount.
    let review = Api::<SelfSubjectReview>::all(token_client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("reviewing the token's identity");
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username.as_deref(),
        Some(format!("system:serviceaccount:{}:reader", ns.name()).as_str())
    );

    // Granting the permission lets both in.
    let role: Role = object(json!({
        "metadata": { "name": "pod-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] }],
    }));
    let binding: RoleBinding = object(json!({
        "metadata": { "name": "reader-reads-pods" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name() }],
    }));
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("creating the Role");
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the RoleBinding");
    for (how, api) in [("impersonated", &impersonated), ("token", &with_token)] {
        poll_until(
            &format!("the RoleBinding to let the ServiceAccount list pods ({how})"),
            TIMEOUT,
            || async {
                api.list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await;
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn child_is_garbage_collected_after_its_owner_is_deleted() {
    let ns = TestNamespace::new("gc").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let owner = config_maps
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "owner" } })),
        )
        .await
        .expect("creating the owner");
    let owner_uid = owner.metadata.uid.expect("a created object has a uid");
    let child: ConfigMap = object(json!({
        "metadata": {
            "name": "child",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "owner",
                "uid": owner_uid,
            }],
        },
    }));
    config_maps
        .create(&PostParams::default(), &child)
        .await
        .expect("creating the child");

    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .expect("deleting the owner");
    wait_for_deletion(&config_maps, "child", TIMEOUT).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn validating_admission_policy_denies_with_its_message() {
    const MESSAGE: &str = "configmaps here may not carry the key 'forbidden'";
    let cluster = cluster().await;
    let ns = TestNamespace::new("vap").await;
    let name = format!("lockkeeper-test-{}", ns.name());
    let policy: ValidatingAdmissionPolicy = object(json!({
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns.name() } },
                "resourceRules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["configmaps"],
                }],
            },
            "validations": [{
                "expression": "!has(object.data) || !('forbidden' in object.data)",
                "message": MESSAGE,
            }],
        },
    }));
    let binding: ValidatingAdmissionPolicyBinding = object(json!({
        "metadata": { "name": name },
        "spec": { "policyName": name, "validationActions": ["Deny"] },
    }));
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(cluster.client());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(cluster.client());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the binding");

    let config_maps: Api<ConfigMap> = ns.api();
    let bad: ConfigMap = object(json!({
        "metadata": { "name": "bad" },
        "data": { "forbidden": "yes" },
    }));
    // The API server picks new policies up asynchronously.
    let denial = poll_until("the policy to deny the ConfigMap", TIMEOUT, || async {
        match config_maps.create(&PostParams::default(), &bad).await {
            Err(kube::Error::Api(status)) => Ok(status),
            Err(other) => Err(format!("an unexpected error: {other}")),
            Ok(_) => {
                config_maps
                    .delete("bad", &DeleteParams::default())
                    .await
                    .map_err(|e| format!("removing the admitted ConfigMap: {e}"))?;
                Err("the ConfigMap was admitted".to_owned())
            }
        }
    })
    .await;
    assert!(denial.message.contains(MESSAGE), "{denial:?}");

    config_maps
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "good" }, "data": { "fine": "yes" } })),
        )
        .await
        .expect("a ConfigMap the policy allows is admitted");

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the binding");
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the policy");
    ns.cleanup().await;
}

#[tokio::test]
async fn mutating_admission_policy_is_served_and_applied() {
    let cluster = cluster().await;
    let ns = TestNamespace::new("map").await;
    let name = format!("lockkeeper-test-{}", ns.name());
    let policy: MutatingAdmissionPolicy = object(json!({
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns.name() } },
                "resourceRules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }],
            },
            "mutations": [{
                "patchType": "ApplyConfiguration",
                "applyConfiguration": {
                    "expression": "Object{metadata: Object.metadata{labels: {\"mutated\": \"yes\"}}}",
                },
            }],
        },
    }));
    let binding: MutatingAdmissionPolicyBinding = object(json!({
        "metadata": { "name": name },
        "spec": { "policyName": name },
    }));
    let policies: Api<MutatingAdmissionPolicy> = Api::all(cluster.client());
    let bindings: Api<MutatingAdmissionPolicyBinding> = Api::all(cluster.client());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the binding");

    let config_maps: Api<ConfigMap> = ns.api();
    let mut attempt = 0;
    poll_until("the policy to label new ConfigMaps", TIMEOUT, || {
        attempt += 1;
        let config_maps = config_maps.clone();
        async move {
            let created = config_maps
                .create(
                    &PostParams::default(),
                    &object(json!({ "metadata": { "name": format!("probe-{attempt}") } })),
                )
                .await
                .map_err(|e| format!("creating a ConfigMap failed: {e}"))?;
            let labels = created.metadata.labels.unwrap_or_default();
            match labels.get("mutated") {
                Some(value) if value == "yes" => Ok(()),
                _ => Err(format!("created without the label: {labels:?}")),
            }
        }
    })
    .await;

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the binding");
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the policy");
    ns.cleanup().await;
}

#[tokio::test]
async fn prometheus_scrapes_a_target_and_sees_runtime_changes() {
    let prometheus = cluster().await.prometheus();
    let target = HttpTarget::start().await;
    target.set_metric("lockkeeper_test_gauge", 1.0);
    target.set_metric(r#"http_requests_total{code="500"}"#, 3.0);
    let job = format!("scrape-{}", target.addr().port());
    let registration = prometheus.register_target(&job, &target);

    let up = format!(r#"up{{job="{job}"}}"#);
    prometheus.wait_for_value(&up, TIMEOUT, |v| v == 1.0).await;
    let gauge = format!(r#"lockkeeper_test_gauge{{job="{job}"}}"#);
    prometheus
        .wait_for_value(&gauge, TIMEOUT, |v| v == 1.0)
        .await;

    target.set_metric("lockkeeper_test_gauge", 42.0);
    target.add_to_metric(r#"http_requests_total{code="500"}"#, 2.0);
    prometheus
        .wait_for_value(&gauge, TIMEOUT, |v| v == 42.0)
        .await;
    let errors = prometheus
        .wait_for_series(
            &format!(r#"http_requests_total{{job="{job}",code="500"}} == 5"#),
            TIMEOUT,
        )
        .await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(target.scrapes() >= 2, "scraped {} times", target.scrapes());

    drop(registration);
    prometheus
        .wait_for_value(&format!("absent({up})"), TIMEOUT, |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn http_target_answers_with_the_status_and_latency_set() {
    let target = HttpTarget::start().await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let request = http.get(format!("{}{path}", target.url()));
        async move { request.send().await.expect("requesting the HTTP target") }
    };

    assert_eq!(get("/healthz").await.status(), 200);
    target.set_status(503);
    assert_eq!(get("/anything").await.status(), 503);

    target.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(get("/slow").await.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(300));

    target.set_metric("queue_depth", 7.0);
    let metrics = get("/metrics").await;
    assert_eq!(metrics.status(), 200, "/metrics ignores the status set");
    assert_eq!(
        metrics.text().await.expect("reading /metrics"),
        "queue_depth 7\n"
    );
    assert_eq!(target.requests(), 3);
    assert_eq!(target.scrapes(), 1);
}

#[tokio::test]
async fn install_crds_is_idempotent_and_concurrent() {
    let (first, second) = tokio::join!(install_crds(), install_crds());
    assert_eq!(first, second);
    let crds: Api<CustomResourceDefinition> = Api::all(cluster().await.client());
    for name in first {
        let crd = crds.get(name).await.expect("reading an installed CRD");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
}

#[tokio::test]
#[should_panic(expected = "last state seen")]
async fn wait_for_reports_the_last_state_on_timeout() {
    let ns = TestNamespace::new("wait-timeout").await;
    let config_maps: Api<ConfigMap> = ns.api();
    config_maps
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "plain" } })),
        )
        .await
        .expect("creating the ConfigMap");
    wait_for(&config_maps, "plain", Duration::from_secs(2), |c| {
        c.data.is_some()
    })
    .await;
}
