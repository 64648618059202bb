//! Preflight dependencies and verification checks: the runbook's 1.2, 1.4 and
//! 3.1–3.3 as data.

use k8s_openapi::api::batch::v1::JobSpec;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, SecretKeyRef, schema::Embedded};

/// Checks run before anything changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preflight {
    /// How long all preflight checks together may take. Defaults to 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Services the application needs, each checked once. Names must be
    /// unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub dependencies: Vec<Dependency>,
    /// Check that the namespace's ResourceQuotas and the schedulable nodes
    /// have room for the new color's resource requests.
    #[serde(default)]
    pub capacity: bool,
}

/// Something the application depends on. Exactly one of `tcp`, `http`,
/// `service` or `dns` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.tcp), has(self.http), has(self.service), has(self.dns)].filter(x, x).size() == 1").message("a dependency sets exactly one of tcp, http, service or dns"))]
pub struct Dependency {
    /// The dependency's name, used in status and messages.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub name: String,
    /// A TCP connection must succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// An HTTP request must return an expected status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A Service must have ready endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceProbe>,
    /// A DNS name must resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsProbe>,
}

/// A TCP connect probe: `host` and `port`, or a `url` (`tcp://host:port`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) ? !has(self.host) && !has(self.port) : has(self.host) && has(self.port)").message("tcp sets either url, or host and port"))]
pub struct TcpProbe {
    /// Host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// `tcp://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300), regex(pattern = super::schema::TCP_URL_PATTERN))]
    pub url: Option<String>,
}

/// An HTTP probe of a dependency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The URL to request (http or https).
    #[schemars(length(max = 2048), regex(pattern = super::schema::HTTP_URL_PATTERN))]
    pub url: String,
    /// Statuses that count as healthy. Defaults to any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub expect_status: Vec<u16>,
    /// A regular expression the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub expect_body: Option<String>,
}

/// A Service that must have ready endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProbe {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Its namespace; the Release's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
    /// How many ready endpoints are needed. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_ready: Option<u32>,
}

/// A DNS name that must resolve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsProbe {
    /// The name to resolve.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// When a verification check runs.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum CheckPhase {
    /// Against the new color before it takes traffic (the preview Service).
    PreCutover,
    /// Against the active Service after the switch.
    PostCutover,
}

/// A verification check. Exactly one of `http`, `prometheus`, `load`, `job`
/// or `pods` is set. A check measures `count` times, `interval` apart; it
/// fails once more than `failureLimit` measurements failed, or more than
/// `inconclusiveLimit` were inconclusive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http), has(self.prometheus), has(self.load), has(self.job), has(self.pods)].filter(x, x).size() == 1").message("a check sets exactly one of http, prometheus, load, job or pods"))]
pub struct Check {
    /// The check's name, used in status, events and metrics.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub name: String,
    /// When the check runs. Defaults to both PreCutover and PostCutover
    /// (Recreate has no cutover: both mean after deploy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub when: Vec<CheckPhase>,
    /// Wait this long before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Duration>,
    /// Time between measurements. Defaults to 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How many measurements are taken. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<u32>,
    /// How many measurements may fail before the check fails. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub failure_limit: Option<u32>,
    /// How many measurements may be inconclusive (no data, NaN, an
    /// unreachable server) before the check fails. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub inconclusive_limit: Option<u32>,
    /// An HTTP request to the new color.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A Prometheus query and a condition over its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
    /// A small load test (runbook 3.2, like `ab -n 100 -c 10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadCheck>,
    /// A Job that must succeed (smoke tests, `check --database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobCheck>,
    /// Pod stability of the new color during verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsCheck>,
}

/// HTTP methods a check may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    #[default]
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

/// An HTTP check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) ? !has(self.port) && !has(self.path) : has(self.port)").message("set either url, or port (and optionally path) on the release's Service"))]
pub struct HttpCheck {
    /// Path on the Service, e.g. `/health`. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = "^/"))]
    pub path: Option<String>,
    /// Port on the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// A full http(s) URL instead of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = super::schema::HTTP_URL_PATTERN))]
    pub url: Option<String>,
    /// The request method. Defaults to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Request headers; values may come from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HttpHeader>,
    /// A request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// Statuses that pass. Defaults to 200.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub expect_status: Vec<u16>,
    /// What the response body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<BodyMatch>,
    /// Per-request timeout. Defaults to 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A request header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("a header sets exactly one of value or valueFrom"))]
pub struct HttpHeader {
    /// Header name.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value read from a Secret, never shown in status or events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<SecretKeyRef>,
}

/// A match on a response body: a regular expression, or a JSON field's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.regex) != has(self.jsonPointer)").message("expectBody sets exactly one of regex or jsonPointer"))]
#[x_kube(validation = Rule::new("!has(self.equals) || has(self.jsonPointer)").message("expectBody.equals goes with jsonPointer"))]
pub struct BodyMatch {
    /// A regular expression the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub regex: Option<String>,
    /// A JSON Pointer (RFC 6901) into a JSON body, e.g. `/status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = "^(/.*)?$"))]
    pub json_pointer: Option<String>,
    /// The value the pointed-to field must have, compared as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
}

/// A Prometheus check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusCheck {
    /// A PromQL query. `{{app}}`, `{{namespace}}`, `{{color}}`,
    /// `{{version}}` and `{{revision}}` are replaced before it is sent.
    #[schemars(length(min = 1, max = 8192))]
    pub query: String,
    /// A CEL expression over `result` (a number for a scalar or one-sample
    /// vector, a list of numbers otherwise) that must be true to pass, e.g.
    /// `result < 0.01`. An empty or NaN result is inconclusive, never a pass.
    #[schemars(length(min = 1, max = 1024))]
    pub condition: String,
    /// The Prometheus server; the Release's or Environment's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<super::PrometheusEndpoint>,
    /// Per-query timeout. Defaults to 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// A load probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.concurrency <= self.requests").message("load.concurrency cannot exceed load.requests"))]
#[x_kube(validation = Rule::new("has(self.url) ? !has(self.port) && !has(self.path) : has(self.port)").message("set either url, or port (and optionally path) on the release's Service"))]
pub struct LoadCheck {
    /// Path on the Service. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = "^/"))]
    pub path: Option<String>,
    /// Port on the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// A full http(s) URL instead of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = super::schema::HTTP_URL_PATTERN))]
    pub url: Option<String>,
    /// Total requests to send.
    #[schemars(range(min = 1, max = 100000))]
    pub requests: u32,
    /// Requests in flight at once.
    #[schemars(range(min = 1, max = 1000))]
    pub concurrency: u32,
    /// Highest acceptable median latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p50: Option<Duration>,
    /// Highest acceptable 95th-percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p95: Option<Duration>,
    /// Highest acceptable 99th-percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<Duration>,
    /// Highest acceptable fraction of failed requests (0 to 1). Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,
}

/// A Job that must succeed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCheck {
    /// The Job (a `batch/v1` JobSpec); containers without an image get the
    /// new version's image.
    pub template: Embedded<JobSpec>,
    /// How long the Job may run. Defaults to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Pod stability of the new color.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodsCheck {
    /// Container restarts tolerated across the new color during the
    /// check. Defaults to 0.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub max_restarts: u32,
    /// Fail on any OOM kill. Defaults to true.
    #[serde(default = "super::release::default_true")]
    pub fail_on_oom_kill: bool,
}
