//! The Release and Environment API as the real API server enforces it:
//! malformed objects are rejected with a message that says what is wrong,
//! valid ones are accepted, an applied Release gets its status promptly, a
//! Release the schema cannot catch ends Stalled without stopping the
//! operator, and `crds/` matches the API types.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use lockkeeper::api::{Environment, Phase, Release};
use serde_json::{Value, json};

use crate::support::{
    Operator, TestNamespace, install_crds, poll_until, repo_root, wait_for, wait_for_event,
};

/// Generous: the machines running these are small and shared.
const TIMEOUT: Duration = Duration::from_secs(90);
/// How long a Release may take to get its status in the promptness test.
/// The goal is well under a second; the bound tolerates a loaded machine.
const STATUS_DEADLINE: Duration = Duration::from_secs(10);
const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// A valid BlueGreen Release spec steering Service `shop`.
fn base_release_spec() -> Value {
    json!({
        "version": "v1.0.0",
        "workload": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "app", "image": IMAGE}]}},
        },
        "strategy": {"type": "BlueGreen", "blueGreen": {"activeService": "shop"}},
    })
}

/// A valid Environment spec.
fn base_environment_spec() -> Value {
    json!({
        "namespaceSelector": {"matchLabels": {"lockkeeper.dev/environment": "staging"}},
    })
}

/// Applies an RFC 7386 JSON merge patch: objects merge key by key, `null`
/// removes a key, anything else (arrays included) replaces.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

/// A Release named `name`: the base spec with `patch` merged in.
fn release(name: &str, patch: Value) -> Value {
    let mut spec = base_release_spec();
    merge(&mut spec, patch);
    json!({
        "apiVersion": "lockkeeper.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// An Environment named `name`: the base spec with `patch` merged in.
fn environment(name: &str, patch: Value) -> Value {
    let mut spec = base_environment_spec();
    merge(&mut spec, patch);
    json!({
        "apiVersion": "lockkeeper.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A Release spec patch with one verification check.
fn check(check: Value) -> Value {
    json!({"verify": [check]})
}

/// A Release spec patch with one preflight dependency.
fn dependency(dependency: Value) -> Value {
    json!({"preflight": {"dependencies": [dependency]}})
}

/// A Release spec patch with one notification channel.
fn notification(notification: Value) -> Value {
    json!({"notify": [notification]})
}

fn job_template(containers: Value) -> Value {
    json!({"template": {"spec": {"restartPolicy": "Never", "containers": containers}}})
}

/// One malformed object and what the API server's message must contain.
struct Malformed {
    what: &'static str,
    object: Value,
    expect: &'static [&'static str],
}

fn malformed(what: &'static str, object: Value, expect: &'static [&'static str]) -> Malformed {
    Malformed {
        what,
        object,
        expect,
    }
}

/// The table of malformed objects. `env_prefix` keeps the cluster-scoped
/// Environments of parallel runs apart.
fn malformed_objects(env_prefix: &str) -> Vec<Malformed> {
    let env = |suffix: &str| format!("{env_prefix}-{suffix}");
    let http_url = "http://127.0.0.1:8080/health";
    vec![
        // CEL rules (x-kubernetes-validations).
        malformed(
            "a check with two kinds",
            release(
                "two-kinds",
                check(json!({"name": "health", "http": {"url": http_url}, "pods": {}})),
            ),
            &["a check sets exactly one of http, prometheus, load, job or pods"],
        ),
        malformed(
            "a check with no kind",
            release("no-kind", check(json!({"name": "health", "count": 3}))),
            &["a check sets exactly one of http, prometheus, load, job or pods"],
        ),
        malformed(
            "a dependency with two kinds",
            release(
                "dep-two-kinds",
                dependency(json!({"name": "db", "dns": {"name": "db"}, "service": {"name": "db"}})),
            ),
            &["a dependency sets exactly one of tcp, http, service or dns"],
        ),
        malformed(
            "BlueGreen without blueGreen",
            release(
                "bluegreen-bare",
                json!({"strategy": {"type": "BlueGreen", "blueGreen": null}}),
            ),
            &["strategy.type BlueGreen needs strategy.blueGreen with at least activeService"],
        ),
        malformed(
            "blueGreen settings on a Recreate strategy",
            release(
                "recreate-bluegreen",
                json!({"strategy": {"type": "Recreate"}}),
            ),
            &["strategy.blueGreen is only valid with strategy.type BlueGreen"],
        ),
        malformed(
            "recreate settings on a BlueGreen strategy",
            release(
                "bluegreen-recreate",
                json!({"strategy": {"recreate": {"service": "shop"}}}),
            ),
            &["strategy.recreate is only valid with strategy.type Recreate"],
        ),
        malformed(
            "previewService equal to activeService",
            release(
                "preview-is-active",
                json!({"strategy": {"blueGreen": {"previewService": "shop"}}}),
            ),
            &["previewService must differ from activeService"],
        ),
        malformed(
            "a tcp dependency with both url and host",
            release(
                "tcp-url-and-host",
                dependency(json!({"name": "db", "tcp": {"url": "tcp://db:5432", "host": "db"}})),
            ),
            &["tcp sets either url, or host and port"],
        ),
        malformed(
            "a tcp dependency with a host but no port",
            release(
                "tcp-host-only",
                dependency(json!({"name": "db", "tcp": {"host": "db"}})),
            ),
            &["tcp sets either url, or host and port"],
        ),
        malformed(
            "an http check with both url and port",
            release(
                "http-url-and-port",
                check(json!({"name": "health", "http": {"url": http_url, "port": 8080}})),
            ),
            &["set either url, or port (and optionally path) on the release's Service"],
        ),
        malformed(
            "an http check with neither url nor port",
            release(
                "http-no-target",
                check(json!({"name": "health", "http": {"path": "/health"}})),
            ),
            &["set either url, or port (and optionally path) on the release's Service"],
        ),
        malformed(
            "a load check with more concurrency than requests",
            release(
                "load-concurrency",
                check(json!({
                    "name": "load",
                    "load": {"url": http_url, "requests": 5, "concurrency": 10},
                })),
            ),
            &["load.concurrency cannot exceed load.requests"],
        ),
        malformed(
            "a header with both value and valueFrom",
            release(
                "header-both",
                check(json!({
                    "name": "health",
                    "http": {
                        "url": http_url,
                        "headers": [{
                            "name": "Authorization",
                            "value": "Bearer x",
                            "valueFrom": {"name": "token", "key": "value"},
                        }],
                    },
                })),
            ),
            &["a header sets exactly one of value or valueFrom"],
        ),
        malformed(
            "expectBody with both regex and jsonPointer",
            release(
                "body-both",
                check(json!({
                    "name": "health",
                    "http": {"url": http_url, "expectBody": {"regex": "ok", "jsonPointer": "/status"}},
                })),
            ),
            &["expectBody sets exactly one of regex or jsonPointer"],
        ),
        malformed(
            "expectBody.equals without jsonPointer",
            release(
                "body-equals",
                check(json!({
                    "name": "health",
                    "http": {"url": http_url, "expectBody": {"regex": "ok", "equals": "ok"}},
                })),
            ),
            &["expectBody.equals goes with jsonPointer"],
        ),
        malformed(
            "a notification with two channels",
            release(
                "notify-two",
                notification(json!({
                    "name": "team",
                    "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}},
                    "email": {"to": ["ops@example.com"], "smtpSecretRef": {"name": "smtp"}},
                })),
            ),
            &["a notification sets exactly one of slack, teams, webhook or email"],
        ),
        malformed(
            "a notification with no channel",
            release("notify-none", notification(json!({"name": "team"}))),
            &["a notification sets exactly one of slack, teams, webhook or email"],
        ),
        malformed(
            "a Release name longer than 40 characters",
            release(
                "a-release-name-that-is-far-too-long-for-children",
                json!({}),
            ),
            &["a Release name must be at most 40 characters"],
        ),
        malformed(
            "an Environment promoting from itself",
            environment(
                &env("self"),
                json!({"promotion": {"from": ["staging", env("self")]}}),
            ),
            &["an Environment cannot promote from itself"],
        ),
        malformed(
            "distinctFromAuthor without required approval",
            environment(
                &env("four-eyes"),
                json!({"approval": {"required": false, "distinctFromAuthor": true}}),
            ),
            &["approval.distinctFromAuthor needs approval.required"],
        ),
        // OpenAPI constraints.
        malformed(
            "a duration in days",
            release(
                "duration-days",
                json!({"workload": {"progressDeadline": "10d"}}),
            ),
            &["spec.workload.progressDeadline", "should match"],
        ),
        malformed(
            "a duration without a unit",
            release(
                "duration-unitless",
                json!({"strategy": {"blueGreen": {"scaleDownDelay": "5"}}}),
            ),
            &["spec.strategy.blueGreen.scaleDownDelay", "should match"],
        ),
        malformed(
            "an Environment freeze with a duration in weeks",
            environment(
                &env("freeze-weeks"),
                json!({"freeze": [{"schedule": "0 18 * * FRI", "duration": "1w"}]}),
            ),
            &["spec.freeze[0].duration", "should match"],
        ),
        malformed(
            "backup.keep 0",
            release(
                "keep-zero",
                json!({"backup": {"secrets": ["creds"], "keep": 0}}),
            ),
            &["spec.backup.keep", "should be greater than or equal to 1"],
        ),
        malformed(
            "historyLimit 0",
            release("history-zero", json!({"historyLimit": 0})),
            &["spec.historyLimit", "should be greater than or equal to 1"],
        ),
        malformed(
            "an activeService that is not a DNS label",
            release(
                "bad-service-name",
                json!({"strategy": {"blueGreen": {"activeService": "Shop_Web"}}}),
            ),
            &["spec.strategy.blueGreen.activeService", "should match"],
        ),
        malformed(
            "a check name that is not a DNS label",
            release(
                "bad-check-name",
                check(json!({"name": "Health Check", "pods": {}})),
            ),
            &["spec.verify[0].name", "should match"],
        ),
        malformed(
            "an ftp:// URL in an http check",
            release(
                "ftp-url",
                check(json!({"name": "health", "http": {"url": "ftp://example.com/health"}})),
            ),
            &["spec.verify[0].http.url", "should match"],
        ),
        malformed(
            "an ftp:// Prometheus address",
            release(
                "ftp-prometheus",
                json!({"prometheus": {"address": "ftp://prometheus:9090"}}),
            ),
            &["spec.prometheus.address", "should match"],
        ),
        malformed(
            "expectStatus 700",
            release(
                "status-700",
                check(
                    json!({"name": "health", "http": {"url": http_url, "expectStatus": [200, 700]}}),
                ),
            ),
            &[
                "spec.verify[0].http.expectStatus[1]",
                "should be less than or equal to 599",
            ],
        ),
        malformed(
            "port 0",
            release(
                "port-zero",
                check(json!({"name": "health", "when": ["PostCutover"], "http": {"port": 0}})),
            ),
            &[
                "spec.verify[0].http.port",
                "should be greater than or equal to 1",
            ],
        ),
        malformed(
            "port 70000",
            release(
                "port-70000",
                dependency(json!({"name": "db", "tcp": {"host": "db", "port": 70000}})),
            ),
            &[
                "spec.preflight.dependencies[0].tcp.port",
                "should be less than or equal to 65535",
            ],
        ),
        malformed(
            "an empty version",
            release("version-empty", json!({"version": ""})),
            &["spec.version", "should be at least 1 chars long"],
        ),
        malformed(
            "a version with spaces",
            release("version-spaces", json!({"version": "v1 beta"})),
            &["spec.version", "should match"],
        ),
        malformed(
            "a missing version",
            release("version-missing", json!({"version": null})),
            &["spec.version", "Required value"],
        ),
        malformed(
            "an unknown strategy type",
            release("strategy-canary", json!({"strategy": {"type": "Canary"}})),
            &[
                "spec.strategy.type",
                "Unsupported value: \"Canary\"",
                "\"BlueGreen\"",
                "\"Recreate\"",
            ],
        ),
        malformed(
            "two verify checks with the same name",
            release(
                "duplicate-checks",
                json!({"verify": [
                    {"name": "health", "when": ["PostCutover"], "pods": {}},
                    {"name": "health", "http": {"url": http_url}},
                ]}),
            ),
            &["spec.verify[1]", "Duplicate value", "\"name\":\"health\""],
        ),
        malformed(
            "two notifications with the same name",
            release(
                "duplicate-notify",
                json!({"notify": [
                    {"name": "team", "slack": {"webhookSecretRef": {"name": "a", "key": "url"}}},
                    {"name": "team", "teams": {"webhookSecretRef": {"name": "b", "key": "url"}}},
                ]}),
            ),
            &["spec.notify[1]", "Duplicate value"],
        ),
        malformed(
            "a pod template with an empty container list",
            release(
                "no-containers",
                json!({"workload": {"template": {"spec": {"containers": []}}}}),
            ),
            &[
                "spec.workload.template.spec.containers",
                "should have at least 1 items",
            ],
        ),
        malformed(
            "a pod template without containers",
            release(
                "containers-missing",
                json!({"workload": {"template": {"spec": {"containers": null, "restartPolicy": "Always"}}}}),
            ),
            &["spec.workload.template.spec.containers", "Required value"],
        ),
        malformed(
            "a container without a name",
            release(
                "container-unnamed",
                json!({"workload": {"template": {"spec": {"containers": [{"image": IMAGE}]}}}}),
            ),
            &[
                "spec.workload.template.spec.containers[0].name",
                "Required value",
            ],
        ),
        malformed(
            "a job check whose template has no containers",
            release(
                "job-no-containers",
                check(json!({"name": "smoke", "job": {"template": job_template(json!([]))}})),
            ),
            &[
                "spec.verify[0].job.template.template.spec.containers",
                "should have at least 1 items",
            ],
        ),
        malformed(
            "a migration Job without a pod template",
            release(
                "migration-no-template",
                json!({"migration": {"job": {"backoffLimit": 0}}}),
            ),
            &["spec.migration.job.template", "Required value"],
        ),
        malformed(
            "a migration Job without a container",
            release(
                "migration-no-container",
                json!({"migration": {"job": job_template(json!([]))}}),
            ),
            &[
                "spec.migration.job.template.spec.containers",
                "should have at least 1 items",
            ],
        ),
        malformed(
            "an e-mail notification without recipients",
            release(
                "email-empty",
                notification(json!({
                    "name": "mail",
                    "email": {"to": [], "smtpSecretRef": {"name": "smtp"}},
                })),
            ),
            &["spec.notify[0].email.to", "should have at least 1 items"],
        ),
        malformed(
            "a malformed e-mail address",
            release(
                "email-malformed",
                notification(json!({
                    "name": "mail",
                    "email": {"to": ["ops@example.com", "ops at example.com"], "smtpSecretRef": {"name": "smtp"}},
                })),
            ),
            &["spec.notify[0].email.to[1]", "should match"],
        ),
        malformed(
            "an unknown notification moment",
            release(
                "notify-on-unknown",
                notification(json!({
                    "name": "team",
                    "on": ["Deployed"],
                    "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}},
                })),
            ),
            &["spec.notify[0].on[0]", "Unsupported value: \"Deployed\""],
        ),
        malformed(
            "a negative replica count",
            release("replicas-negative", json!({"workload": {"replicas": -1}})),
            &[
                "spec.workload.replicas",
                "should be greater than or equal to 0",
            ],
        ),
        malformed(
            "a load check error rate above 1",
            release(
                "error-rate",
                check(json!({
                    "name": "load",
                    "load": {"url": http_url, "requests": 10, "concurrency": 1, "maxErrorRate": 1.5},
                })),
            ),
            &[
                "spec.verify[0].load.maxErrorRate",
                "should be less than or equal to 1",
            ],
        ),
        malformed(
            "an Environment without a namespaceSelector",
            environment(&env("no-selector"), json!({"namespaceSelector": null})),
            &["spec.namespaceSelector", "Required value"],
        ),
        malformed(
            "an Environment promoting from no environment",
            environment(&env("promote-none"), json!({"promotion": {"from": []}})),
            &["spec.promotion.from", "should have at least 1 items"],
        ),
    ]
}

/// The Release and Environment APIs as untyped objects, so that a test can
/// send what the typed structs cannot even represent (`"10d"`, port 70000).
struct UntypedApis {
    releases: Api<DynamicObject>,
    environments: Api<DynamicObject>,
}

impl UntypedApis {
    fn new(ns: &TestNamespace) -> Self {
        let client = ns.client();
        Self {
            releases: Api::namespaced_with(
                client.clone(),
                ns.name(),
                &ApiResource::erase::<Release>(&()),
            ),
            environments: Api::all_with(client, &ApiResource::erase::<Environment>(&())),
        }
    }

    fn for_object(&self, object: &Value) -> &Api<DynamicObject> {
        match object["kind"].as_str() {
            Some("Environment") => &self.environments,
            _ => &self.releases,
        }
    }

    async fn create(&self, object: &Value) -> Result<DynamicObject, kube::Error> {
        let dynamic: DynamicObject =
            serde_json::from_value(object.clone()).expect("a well-formed object literal");
        self.for_object(object)
            .create(&PostParams::default(), &dynamic)
            .await
    }

    async fn delete(&self, object: &Value) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        match self
            .for_object(object)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("deleting {name}: {e}"),
        }
    }
}

#[tokio::test]
async fn malformed_releases_and_environments_are_rejected_with_a_reason() {
    install_crds().await;
    let ns = TestNamespace::new("api-malformed").await;
    let apis = UntypedApis::new(&ns);
    let cases = malformed_objects(ns.name());
    assert!(cases.len() >= 25, "the table has {} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        match apis.create(&case.object).await {
            Ok(_) => {
                // Never leave an accepted cluster-scoped object behind.
                apis.delete(&case.object).await;
                failures.push(format!("{}: accepted, expected a rejection", case.what));
            }
            Err(kube::Error::Api(status)) => {
                let missing: Vec<&&str> = case
                    .expect
                    .iter()
                    .filter(|fragment| !status.message.contains(**fragment))
                    .collect();
                if status.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{}: HTTP {} {:?}, message lacks {missing:?}: {}",
                        case.what, status.code, status.reason, status.message
                    ));
                } else {
                    eprintln!("rejected {}: {}", case.what, status.message);
                }
            }
            Err(other) => failures.push(format!("{}: request failed: {other}", case.what)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed objects were not rejected as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "all {} malformed objects were rejected by the API server",
        cases.len()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn valid_releases_and_environments_are_accepted() {
    install_crds().await;
    let ns = TestNamespace::new("api-valid").await;
    let apis = UntypedApis::new(&ns);
    let staging = format!("{}-staging", ns.name());
    let production = format!("{}-production", ns.name());
    let valid = [
        release("minimal", json!({})),
        release(
            "everything",
            json!({
                "version": "2024.06.1-rc_1",
                "changes": {"features": ["one-click checkout"], "fixes": ["cart rounding"]},
                "workload": {
                    "replicas": 2,
                    "container": "app",
                    "progressDeadline": "1h30m",
                    "template": {
                        "metadata": {"labels": {"app": "shop"}},
                        "spec": {"containers": [
                            {"name": "app", "image": "shop:v2"},
                            {"name": "proxy", "image": "proxy:1.0"},
                        ]},
                    },
                },
                "strategy": {"type": "Recreate", "blueGreen": null, "recreate": {"service": "shop"}},
                "preflight": {
                    "timeout": "2m",
                    "capacity": true,
                    "dependencies": [
                        {"name": "db", "tcp": {"host": "db", "port": 5432}},
                        {"name": "cache", "tcp": {"url": "tcp://cache:6379"}},
                        {"name": "payments", "http": {"url": "https://payments.example.com/health", "expectStatus": [200, 204]}},
                        {"name": "queue", "service": {"name": "queue", "minReady": 1}},
                        {"name": "mail", "dns": {"name": "smtp.example.com"}},
                    ],
                },
                "backup": {
                    "configMaps": ["settings"],
                    "secrets": ["credentials"],
                    "volumes": [{"persistentVolumeClaim": "data"}],
                    "jobs": [{
                        "name": "dump",
                        "template": job_template(json!([{"name": "dump"}])),
                        "restore": job_template(json!([{"name": "restore"}])),
                    }],
                    "keep": 5,
                    "timeout": "10m",
                },
                "migration": {
                    "job": job_template(json!([{"name": "migrate", "command": ["app", "migrate"]}])),
                    "verify": job_template(json!([{"name": "check"}])),
                    "rollback": job_template(json!([{"name": "down"}])),
                    "timeout": "15m",
                },
                "verify": [
                    {
                        "name": "health",
                        "count": 3,
                        "interval": "10s",
                        "failureLimit": 1,
                        "http": {
                            "port": 8080,
                            "path": "/health",
                            "method": "GET",
                            "headers": [
                                {"name": "X-Token", "valueFrom": {"name": "token", "key": "value"}},
                                {"name": "Accept", "value": "application/json"},
                            ],
                            "expectStatus": [200],
                            "expectBody": {"jsonPointer": "/status", "equals": "ok"},
                            "timeout": "5s",
                        },
                    },
                    {
                        "name": "errors",
                        "when": ["PostCutover"],
                        "prometheus": {"query": "sum(rate(http_errors_total{app=\"{{app}}\"}[1m]))", "condition": "result < 0.01"},
                    },
                    {
                        "name": "load",
                        "load": {"url": "http://127.0.0.1:8080/", "requests": 100, "concurrency": 10, "maxP95": "250ms", "maxErrorRate": 0.01},
                    },
                    {"name": "smoke", "job": {"template": job_template(json!([{"name": "smoke"}])), "timeout": "5m"}},
                    {"name": "stable", "pods": {"maxRestarts": 0}},
                ],
                "rollback": {"automatic": true, "restoreConfig": true, "restoreVolumes": false},
                "prometheus": {"address": "http://prometheus.monitoring:9090"},
                "notify": [
                    {"name": "team", "on": ["Ready", "RolledBack"], "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}},
                    {"name": "events", "webhook": {"webhookSecretRef": {"name": "hook", "key": "url"}}},
                    {"name": "mail", "email": {"to": ["ops@example.com"], "from": "lockkeeper@example.com", "smtpSecretRef": {"name": "smtp"}}},
                ],
                "historyLimit": 20,
            }),
        ),
        release(
            "bluegreen-preview",
            json!({"strategy": {"blueGreen": {"previewService": "shop-preview", "autoCutover": false, "scaleDownDelay": "1m30s"}}}),
        ),
        environment(&staging, json!({})),
        environment(
            &production,
            json!({
                "namespaceSelector": {"matchLabels": {"lockkeeper.dev/environment": "production"}},
                "promotion": {"from": [staging.as_str()], "soak": "1h"},
                "approval": {"required": true, "distinctFromAuthor": true},
                "freeze": [{"schedule": "0 18 * * FRI", "duration": "64h", "timeZone": "Europe/Berlin", "reason": "weekend"}],
                "defaults": {
                    "prometheus": {"address": "http://prometheus.monitoring:9090"},
                    "rollback": {"automatic": true, "restoreVolumes": false},
                },
            }),
        ),
    ];
    let mut failures = Vec::new();
    for object in &valid {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        match apis.create(object).await {
            Ok(created) => {
                let kind = object["kind"].as_str().unwrap_or_default();
                assert!(created.metadata.uid.is_some(), "{kind} {name} has a uid");
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    for object in &valid {
        if object["kind"] == "Environment" {
            apis.delete(object).await;
        }
    }
    assert!(
        failures.is_empty(),
        "valid objects were rejected:\n{}",
        failures.join("\n")
    );
    ns.cleanup().await;
}

/// Creates a Service without a selector, for a Release to steer.
pub(crate) async fn create_service(ns: &TestNamespace, name: &str) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .expect("a valid Service literal");
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("creating Service {name}: {e}"));
}

/// Deletes every Release in the namespace and waits until they are gone.
/// The operator, still running, removes its finalizer from each; a
/// namespace deleted after the operator stopped would otherwise stay
/// Terminating.
pub(crate) async fn delete_releases(ns: &TestNamespace, timeout: Duration) {
    // Untyped, so that a Release the API types cannot decode goes too.
    let releases: Api<DynamicObject> =
        Api::namespaced_with(ns.client(), ns.name(), &ApiResource::erase::<Release>(&()));
    releases
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting the Releases in {}: {e}", ns.name()));
    poll_until("every Release to be deleted", timeout, || async {
        let left = releases
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing Releases: {e}"))?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} Releases left", left.items.len()))
        }
    })
    .await;
}

async fn create_release(ns: &TestNamespace, object: Value) -> Release {
    let release: Release = serde_json::from_value(object).expect("a valid Release literal");
    let name = release.metadata.name.clone().unwrap_or_default();
    ns.api::<Release>()
        .create(&PostParams::default(), &release)
        .await
        .unwrap_or_else(|e| panic!("creating Release {name}: {e}"))
}

const KSTATUS: [&str; 3] = ["Ready", "Reconciling", "Stalled"];

/// The status describes the current generation and carries at least one
/// kstatus condition for it.
fn has_current_status(release: &Release) -> bool {
    let generation = release.metadata.generation;
    release.status.as_ref().is_some_and(|status| {
        generation.is_some()
            && status.observed_generation == generation
            && status
                .conditions
                .iter()
                .any(|c| KSTATUS.contains(&c.type_.as_str()) && c.observed_generation == generation)
    })
}

fn condition_summary(release: &Release) -> String {
    release
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .map(|c| format!("{}={}({})", c.type_, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn applied_release_gets_observed_generation_and_conditions_promptly() {
    install_crds().await;
    let ns = TestNamespace::new("api-status").await;
    let releases: Api<Release> = ns.api();
    const MEASURED: usize = 5;
    for i in 0..=MEASURED {
        create_service(&ns, &format!("shop-{i}")).await;
    }
    let mut operator = Operator::for_namespace(ns.name()).await;

    // The first Release also waits for the operator to start and sync its
    // caches; it is reported, not measured against the deadline.
    let spec =
        |i: usize| json!({"strategy": {"blueGreen": {"activeService": format!("shop-{i}")}}});
    let started = Instant::now();
    create_release(&ns, release("shop-0", spec(0))).await;
    let first = wait_for(&releases, "shop-0", TIMEOUT, has_current_status).await;
    let cold = started.elapsed();

    let mut figures = Vec::new();
    for i in 1..=MEASURED {
        let name = format!("shop-{i}");
        let started = Instant::now();
        create_release(&ns, release(&name, spec(i))).await;
        let seen = wait_for(&releases, &name, STATUS_DEADLINE, has_current_status).await;
        let elapsed = started.elapsed();
        eprintln!(
            "Release {name}: observedGeneration {:?} and conditions [{}] {elapsed:?} after create",
            seen.status.as_ref().and_then(|s| s.observed_generation),
            condition_summary(&seen)
        );
        figures.push(elapsed);
    }
    figures.sort();
    eprintln!(
        "time from create to observedGeneration + kstatus conditions: first Release (operator starting) {cold:?} [{}]; \
         with the operator running, over {MEASURED} Releases: min {:?}, median {:?}, max {:?}",
        condition_summary(&first),
        figures[0],
        figures[MEASURED / 2],
        figures[MEASURED - 1],
    );
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.log()
    );
    delete_releases(&ns, TIMEOUT).await;
    ns.cleanup().await;
}

/// A Release the schema accepts but the controller cannot run, and a
/// fragment its Stalled message and Warning event must contain.
struct SemanticCase {
    name: &'static str,
    patch: Value,
    expect: &'static str,
}

#[tokio::test]
async fn semantically_invalid_release_stalls_and_the_operator_keeps_serving() {
    install_crds().await;
    let ns = TestNamespace::new("api-semantic").await;
    create_service(&ns, "shop").await;
    let mut operator = Operator::for_namespace(ns.name()).await;
    let releases: Api<Release> = ns.api();
    let events: Api<Event> = ns.api();

    let cases = [
        SemanticCase {
            name: "no-image",
            patch: json!({"workload": {"template": {"spec": {"containers": [{"name": "app"}]}}}}),
            expect: "spec.workload.template.spec.containers[0].image",
        },
        SemanticCase {
            name: "reserved-label",
            patch: json!({"workload": {"template": {
                "metadata": {"labels": {"lockkeeper.dev/color": "blue"}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}]},
            }}}),
            expect: "spec.workload.template.metadata.labels: label lockkeeper.dev/color",
        },
        SemanticCase {
            name: "bad-migration-job",
            patch: json!({"migration": {"job": {"template": {"spec": {
                "containers": [{"name": "migrate", "image": IMAGE}],
                "restartPolicy": ["Never"],
            }}}}}),
            expect: "spec.migration.job: not a valid JobSpec",
        },
        SemanticCase {
            name: "unknown-container",
            patch: json!({"workload": {"container": "web"}}),
            expect: "spec.workload.container",
        },
        SemanticCase {
            name: "bad-pod-template",
            patch: json!({"workload": {"template": {"spec": {
                "containers": [{"name": "app", "image": IMAGE}],
                "restartPolicy": ["Always"],
            }}}}),
            expect: "spec.workload.template",
        },
    ];
    for case in &cases {
        create_release(&ns, release(case.name, case.patch.clone())).await;
    }
    for case in &cases {
        let stalled = wait_for(&releases, case.name, TIMEOUT, |r| {
            let generation = r.metadata.generation;
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == generation
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Stalled" && c.status == "True" && c.reason == "InvalidSpec"
                    })
            })
        })
        .await;
        let conditions = &stalled.status.as_ref().expect("a status").conditions;
        let condition = conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("a Stalled condition");
        assert!(
            condition.message.contains(case.expect),
            "Release {}: the Stalled message should name {:?}: {:?}",
            case.name,
            case.expect,
            condition.message
        );
        for (type_, status) in [("Ready", "False"), ("Reconciling", "False")] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == status && c.reason == "InvalidSpec"),
                "Release {}: expected {type_}={status} reason InvalidSpec: {conditions:?}",
                case.name
            );
        }
        let event = wait_for_event(
            &events,
            "Release",
            case.name,
            "Warning",
            "InvalidSpec",
            TIMEOUT,
        )
        .await;
        assert!(
            event.note.contains(case.expect),
            "Release {}: the InvalidSpec event should name {:?}: {event:?}",
            case.name,
            case.expect
        );
        eprintln!(
            "Release {} stalled: {} (event from {})",
            case.name, condition.message, event.reporting_controller
        );
    }

    // The same operator still runs a valid Release in the namespace to the end.
    create_release(&ns, release("shop", json!({}))).await;
    let ready = wait_for(&releases, "shop", TIMEOUT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Ready))
    })
    .await;
    let status = ready.status.as_ref().expect("a status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "a Ready Release has Ready=True: {:?}",
        status.conditions
    );
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.log()
    );
    // The stalled Releases were left alone and are still stalled.
    for case in &cases {
        let release = releases
            .get(case.name)
            .await
            .unwrap_or_else(|e| panic!("reading Release {}: {e}", case.name));
        let status = release.status.unwrap_or_default();
        assert!(
            status.phase.is_none()
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True"),
            "Release {} should still be Stalled and not started: {status:?}",
            case.name
        );
    }

    // Once its spec is fixed, a stalled Release runs like any other.
    create_service(&ns, "fixed").await;
    let fix = json!({"spec": {
        "workload": {"template": {"spec": {"containers": [{"name": "app", "image": IMAGE}]}}},
        "strategy": {"blueGreen": {"activeService": "fixed"}},
    }});
    releases
        .patch("no-image", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fixing Release no-image");
    let fixed = wait_for(&releases, "no-image", TIMEOUT, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.observed_generation == r.metadata.generation && s.phase == Some(Phase::Ready)
        })
    })
    .await;
    let conditions = &fixed.status.as_ref().expect("a status").conditions;
    assert!(
        !conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True"),
        "the fixed Release is no longer Stalled: {conditions:?}"
    );

    let log = operator.log();
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    delete_releases(&ns, TIMEOUT).await;
    ns.cleanup().await;
}

/// A Release the schema accepts but the operator's types cannot decode (a
/// duration too large to represent) ends Stalled with reason Unreadable,
/// naming the field, with a Warning event.
#[tokio::test]
async fn undecodable_release_stalls_as_unreadable_with_a_warning_event() {
    install_crds().await;
    let ns = TestNamespace::new("api-unreadable").await;
    create_service(&ns, "shop").await;
    let mut operator = Operator::for_namespace(ns.name()).await;
    let apis = UntypedApis::new(&ns);
    let events: Api<Event> = ns.api();
    apis.create(&release(
        "huge",
        json!({"workload": {"progressDeadline": "99999999999999999h"}}),
    ))
    .await
    .expect("the schema accepts the duration");

    let stalled = wait_for(&apis.releases, "huge", TIMEOUT, |r| {
        let generation = r.metadata.generation.map(Value::from);
        let status = &r.data["status"];
        status["observedGeneration"] == generation.unwrap_or_default()
            && status["conditions"].as_array().is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c["type"] == "Stalled" && c["status"] == "True" && c["reason"] == "Unreadable"
                })
            })
    })
    .await;
    let message = stalled.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Stalled")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    let event = wait_for_event(&events, "Release", "huge", "Warning", "Unreadable", TIMEOUT).await;
    for text in [&message, &event.note] {
        assert!(
            text.contains("spec.workload.progressDeadline") && text.contains("99999999999999999h"),
            "the field and its value should be named: {text:?}"
        );
    }
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.log()
    );
    let log = operator.log();
    assert!(
        !log.contains("reconcile failed"),
        "reporting an unreadable Release should not fail:\n{log}"
    );
    delete_releases(&ns, TIMEOUT).await;
    ns.cleanup().await;
}

#[test]
fn committed_crds_match_the_api_types() {
    let generated = lockkeeper::crd::to_yaml().expect("rendering the CRDs");
    let path = repo_root().join("crds/lockkeeper.dev.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if generated != committed {
        let first_difference = generated
            .lines()
            .zip(committed.lines())
            .enumerate()
            .find(|(_, (g, c))| g != c)
            .map_or_else(
                || "one is a prefix of the other".to_owned(),
                |(i, (g, c))| format!("line {}: generated {g:?}, committed {c:?}", i + 1),
            );
        panic!(
            "{} is out of date with the API types ({first_difference}): run `make crds` and commit the result",
            path.display()
        );
    }
}

/// The names of things the operator creates start with the Release's name,
/// which is why the API caps it; the CRD carries that rule to the server.
#[tokio::test]
async fn release_name_of_exactly_forty_characters_is_accepted() {
    install_crds().await;
    let ns = TestNamespace::new("api-name").await;
    let apis = UntypedApis::new(&ns);
    let name = "a".repeat(40);
    apis.create(&release(&name, json!({})))
        .await
        .unwrap_or_else(|e| panic!("a 40-character name should be accepted: {e}"));
    ns.cleanup().await;
}
