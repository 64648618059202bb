//! The `prometheus` verification check (runbook 3.3): an instant query,
//! templated with the release's names, and a CEL condition over its result.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Measurement, describe_request_error, parse_http_url};

/// Per-query timeout when the check sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The names a query may use as `{{name}}`.
pub const TEMPLATE_NAMES: [&str; 5] = ["app", "namespace", "color", "version", "revision"];

/// What `{{app}}`, `{{namespace}}`, `{{color}}`, `{{version}}` and
/// `{{revision}}` stand for in a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryVars {
    /// The application (the Release's name).
    pub app: String,
    /// The Release's namespace.
    pub namespace: String,
    /// The color being verified (`blue` or `green`).
    pub color: String,
    /// The version being released.
    pub version: String,
    /// The revision being released.
    pub revision: i64,
}

impl QueryVars {
    fn get(&self, name: &str) -> Option<String> {
        match name {
            "app" => Some(self.app.clone()),
            "namespace" => Some(self.namespace.clone()),
            "color" => Some(self.color.clone()),
            "version" => Some(self.version.clone()),
            "revision" => Some(self.revision.to_string()),
            _ => None,
        }
    }
}

/// Replaces each `{{name}}` (spaces inside the braces allowed) with its
/// value. Values are escaped for a PromQL string literal (`\` and `"`), as
/// they normally stand inside a label matcher's quotes. An unknown name or
/// an unclosed `{{` is an error, found before anything is sent.
pub fn render_query(template: &str, vars: &QueryVars) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "query template: \"{{{{\" at byte {} is never closed",
                template.len() - rest.len() + start
            )
        })?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "query template: unknown name {{{{{name}}}}}; known are {}",
                TEMPLATE_NAMES.map(|n| format!("{{{{{n}}}}}")).join(", ")
            )
        })?;
        out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a query template's names without values, so that a typo stalls
/// the release before a revision starts.
pub fn check_query_template(template: &str) -> Result<(), String> {
    let placeholder = QueryVars {
        app: String::new(),
        namespace: String::new(),
        color: String::new(),
        version: String::new(),
        revision: 0,
    };
    render_query(template, &placeholder).map(drop)
}

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Compiles a condition (CEL over `result`). Fails when it does not parse,
/// so the controller can stall the release, naming the check, before a
/// revision starts.
pub fn compile_condition(source: &str) -> Result<Condition, String> {
    let program = cel::Program::compile(source)
        .map_err(|e| format!("condition {source:?} does not parse: {e}"))?;
    if !program.references().has_variable("result") {
        return Err(format!(
            "condition {source:?} does not use `result`, so it cannot judge the query"
        ));
    }
    Ok(Condition {
        source: source.to_owned(),
        program: Arc::new(program),
    })
}

/// An instant query's result.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// A scalar.
    Scalar(f64),
    /// An instant vector's sample values (labels are not needed by a
    /// condition over numbers).
    Vector(Vec<f64>),
}

/// Why a query gave no result.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Prometheus rejected the query as malformed (`bad_data`): the check
    /// can never pass, so the release should be Failed or Stalled. Carries
    /// Prometheus's own error text.
    #[error("Prometheus at {address} rejected the query {query:?}: {error}")]
    InvalidQuery {
        /// The Prometheus address.
        address: String,
        /// The query as sent.
        query: String,
        /// Prometheus's error text.
        error: String,
    },
    /// Prometheus could not be asked or did not answer usefully (not
    /// reachable, a timeout, an execution error, an answer that is not the
    /// API's JSON): no answer about the release.
    #[error("querying Prometheus at {address}: {reason}")]
    Unavailable {
        /// The Prometheus address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The query's result is a range vector or a string, which a condition
    /// over numbers cannot judge.
    #[error("the query {query:?} returned a {result_type}; use an instant vector or a scalar")]
    UnsupportedResult {
        /// The query as sent.
        query: String,
        /// Prometheus's `resultType`.
        result_type: String,
    },
}

/// Where to send queries and how.
#[derive(Clone, Debug)]
pub struct PrometheusServer {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// A bearer token read from the endpoint's Secret.
    pub bearer_token: Option<String>,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    value: (serde_json::Value, String),
}

/// Prometheus writes sample values as strings, with `NaN`, `+Inf`, `-Inf`.
fn parse_sample(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        other => other
            .parse()
            .map_err(|e| format!("the sample value {other:?} is not a number: {e}")),
    }
}

/// Parses the body of `/api/v1/query`'s answer (success or error).
pub fn parse_response(address: &str, query: &str, body: &str) -> Result<QueryResult, QueryError> {
    let unavailable = |reason: String| QueryError::Unavailable {
        address: address.to_owned(),
        reason,
    };
    let response: ApiResponse = serde_json::from_str(body).map_err(|e| {
        unavailable(format!(
            "the answer is not Prometheus API JSON ({e}): {:?}",
            body.chars().take(200).collect::<String>()
        ))
    })?;
    if response.status != "success" {
        let error = response.error.unwrap_or_else(|| response.status.clone());
        return Err(match response.error_type.as_deref() {
            Some("bad_data") => QueryError::InvalidQuery {
                address: address.to_owned(),
                query: query.to_owned(),
                error,
            },
            Some(kind) => unavailable(format!("{kind}: {error}")),
            None => unavailable(error),
        });
    }
    let data = response
        .data
        .ok_or_else(|| unavailable("a successful answer without data".to_owned()))?;
    match data.result_type.as_str() {
        "scalar" => {
            let (_, value): (serde_json::Value, String) = serde_json::from_value(data.result)
                .map_err(|e| unavailable(format!("reading the scalar result: {e}")))?;
            parse_sample(&value)
                .map(QueryResult::Scalar)
                .map_err(unavailable)
        }
        "vector" => {
            let samples: Vec<VectorSample> = serde_json::from_value(data.result)
                .map_err(|e| unavailable(format!("reading the vector result: {e}")))?;
            samples
                .iter()
                .map(|s| parse_sample(&s.value.1))
                .collect::<Result<_, _>>()
                .map(QueryResult::Vector)
                .map_err(unavailable)
        }
        other => Err(QueryError::UnsupportedResult {
            query: query.to_owned(),
            result_type: other.to_owned(),
        }),
    }
}

/// Runs an instant query (`GET /api/v1/query`).
pub async fn query(
    client: &reqwest::Client,
    server: &PrometheusServer,
    promql: &str,
    timeout: Duration,
) -> Result<QueryResult, QueryError> {
    let address = server.address.trim_end_matches('/');
    let unavailable = |reason: String| QueryError::Unavailable {
        address: address.to_owned(),
        reason,
    };
    let base = parse_http_url(address).map_err(unavailable)?;
    let mut url = base
        .join(&format!(
            "{}/api/v1/query",
            base.path().trim_end_matches('/')
        ))
        .map_err(|e| unavailable(format!("building the query URL: {e}")))?;
    url.query_pairs_mut().append_pair("query", promql);
    let mut request = client
        .get(url)
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = &server.bearer_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| unavailable(describe_request_error(&e, timeout)))?;
    let status = response.status();
    let body = super::http::read_body(response, timeout)
        .await
        .map_err(|e| unavailable(format!("HTTP {status}, {e}")))?;
    match parse_response(address, promql, &body) {
        // An error page from a proxy in front of Prometheus, or 401/403.
        Err(QueryError::Unavailable { reason, .. }) if !status.is_success() => {
            Err(unavailable(format!("HTTP {status}: {reason}")))
        }
        other => other,
    }
}

/// The CEL value `result` is bound to: a number for a scalar or a
/// one-sample vector, a list of numbers otherwise.
fn cel_result(result: &QueryResult) -> cel::Value {
    match result {
        QueryResult::Scalar(v) => cel::Value::Float(*v),
        QueryResult::Vector(values) if values.len() == 1 => cel::Value::Float(values[0]),
        QueryResult::Vector(values) => cel::Value::List(Arc::new(
            values.iter().map(|v| cel::Value::Float(*v)).collect(),
        )),
    }
}

/// The result as text for status and events.
pub fn format_result(result: &QueryResult) -> String {
    match result {
        QueryResult::Scalar(v) => v.to_string(),
        QueryResult::Vector(values) if values.len() == 1 => values[0].to_string(),
        QueryResult::Vector(values) => {
            let texts: Vec<String> = values.iter().map(f64::to_string).collect();
            format!("[{}]", texts.join(", "))
        }
    }
}

/// Judges a query result with a condition. Pure. An empty result or any
/// NaN is inconclusive, never a pass; so is a condition that cannot be
/// evaluated on this result (e.g. `result < 1` on a many-sample vector) or
/// that yields something other than a boolean.
pub fn evaluate(condition: &Condition, result: &QueryResult) -> Measurement {
    let value = Some(format_result(result));
    let values: &[f64] = match result {
        QueryResult::Scalar(v) => std::slice::from_ref(v),
        QueryResult::Vector(values) => values,
    };
    if values.is_empty() {
        return Measurement::inconclusive(None, "the query returned no samples");
    }
    if values.iter().any(|v| v.is_nan()) {
        return Measurement::inconclusive(value, "the query returned NaN");
    }
    let mut context = cel::Context::default();
    context.add_variable_from_value("result", cel_result(result));
    let shown = value.clone().unwrap_or_default();
    match condition.program.execute(&context) {
        Ok(cel::Value::Bool(true)) => Measurement::pass(
            value,
            format!("{} holds for result = {shown}", condition.source),
        ),
        Ok(cel::Value::Bool(false)) => Measurement::fail(
            value,
            format!("{} does not hold for result = {shown}", condition.source),
        ),
        Ok(other) => Measurement::inconclusive(
            value,
            format!(
                "{} gave {other:?} for result = {shown}, not true or false",
                condition.source
            ),
        ),
        Err(e) => Measurement::inconclusive(
            value,
            format!("evaluating {} for result = {shown}: {e}", condition.source),
        ),
    }
}

/// One measurement of a `prometheus` check: renders `query_template`, runs
/// it and judges the result with `condition`.
///
/// Prometheus being unreachable (or timing out, or failing to execute the
/// query) is inconclusive, with the reason. A query Prometheus rejects as
/// malformed, or a template with an unknown name, is returned as
/// [`QueryError::InvalidQuery`] with Prometheus's (or the template's) own
/// text, and a range query as [`QueryError::UnsupportedResult`], for the
/// caller to fail or stall the release: neither can ever pass.
pub async fn prometheus(
    client: &reqwest::Client,
    server: &PrometheusServer,
    query_template: &str,
    condition: &Condition,
    vars: &QueryVars,
    timeout: Duration,
) -> Result<Measurement, QueryError> {
    let promql = render_query(query_template, vars).map_err(|error| QueryError::InvalidQuery {
        address: server.address.clone(),
        query: query_template.to_owned(),
        error,
    })?;
    match query(client, server, &promql, timeout).await {
        Ok(result) => Ok(evaluate(condition, &result)),
        Err(e @ (QueryError::InvalidQuery { .. } | QueryError::UnsupportedResult { .. })) => Err(e),
        Err(e) => Ok(Measurement::inconclusive(None, e.to_string())),
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
