//! The Prometheus that `up.sh` runs next to the cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::http_target::HttpTarget;
use super::wait::poll_until;

/// Registers scrape targets and runs queries. Scrapes happen every second;
/// a registered target shows up within about two seconds.
#[derive(Debug, Clone)]
pub struct Prometheus {
    url: String,
    targets_dir: PathBuf,
    http: reqwest::Client,
}

/// One element of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} => {}", self.labels, self.value)
    }
}

/// A scrape target that stays registered until this is dropped.
#[derive(Debug)]
pub struct RegisteredTarget {
    file: PathBuf,
    job: String,
}

impl RegisteredTarget {
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl Drop for RegisteredTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    status: String,
    data: Option<QueryData>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<VectorElement>),
    Scalar((f64, String)),
    Matrix(serde_json::Value),
    String(serde_json::Value),
}

#[derive(Deserialize)]
struct VectorElement {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Prometheus {
    pub(crate) fn new(url: String, targets_dir: PathBuf) -> Prometheus {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("building an HTTP client for Prometheus: {e}"));
        Prometheus {
            url,
            targets_dir,
            http,
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn targets_dir(&self) -> &Path {
        &self.targets_dir
    }

    /// Has Prometheus scrape `target`'s `/metrics` with the label
    /// `job=<job>`. Use a job name unique to the test.
    pub fn register_target(&self, job: &str, target: &HttpTarget) -> RegisteredTarget {
        self.register_address(job, target.addr(), &[])
    }

    /// Has Prometheus scrape `http://<address>/metrics` with the label
    /// `job=<job>` and the given extra labels.
    pub fn register_address(
        &self,
        job: &str,
        address: SocketAddr,
        labels: &[(&str, &str)],
    ) -> RegisteredTarget {
        let mut all_labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        all_labels.insert("job", job);
        let content =
            serde_json::json!([{ "targets": [address.to_string()], "labels": all_labels }]);
        let stem: String = job
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let file = self
            .targets_dir
            .join(format!("{stem}-{}.json", address.port()));
        // Written aside and renamed so that Prometheus never reads half a file
        // (the temporary name does not match its *.json pattern).
        let partial = file.with_extension("json.partial");
        std::fs::create_dir_all(&self.targets_dir)
            .and_then(|()| std::fs::write(&partial, content.to_string()))
            .and_then(|()| std::fs::rename(&partial, &file))
            .unwrap_or_else(|e| panic!("registering scrape target {}: {e}", file.display()));
        RegisteredTarget {
            file,
            job: job.to_owned(),
        }
    }

    /// Evaluates `promql` at the current time. A scalar result comes back
    /// as one sample without labels.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            [("query", promql)],
        )
        .map_err(|e| format!("building a query URL from {}: {e}", self.url))?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("querying Prometheus at {}: {e}", self.url))?;
        let status = response.status();
        let body: QueryResponse = response
            .json()
            .await
            .map_err(|e| format!("reading Prometheus' answer to {promql:?} ({status}): {e}"))?;
        if body.status != "success" {
            return Err(format!(
                "Prometheus rejected {promql:?}: {}",
                body.error.unwrap_or(body.status)
            ));
        }
        match body.data {
            Some(QueryData::Vector(elements)) => elements
                .into_iter()
                .map(|element| {
                    Ok(Sample {
                        value: parse_value(&element.value.1)?,
                        labels: element.metric,
                    })
                })
                .collect(),
            Some(QueryData::Scalar((_, value))) => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&value)?,
            }]),
            Some(QueryData::Matrix(_) | QueryData::String(_)) | None => Err(format!(
                "{promql:?} is not an instant vector or scalar query"
            )),
        }
    }

    /// Polls `promql` until it returns at least one sample.
    pub async fn wait_for_series(&self, promql: &str, timeout: Duration) -> Vec<Sample> {
        poll_until(&format!("Prometheus series {promql}"), timeout, || async {
            let samples = self.query(promql).await?;
            if samples.is_empty() {
                Err("an empty result".to_owned())
            } else {
                Ok(samples)
            }
        })
        .await
    }

    /// Polls `promql` until it returns exactly one sample whose value
    /// satisfies `condition`, and returns that value.
    pub async fn wait_for_value(
        &self,
        promql: &str,
        timeout: Duration,
        condition: impl Fn(f64) -> bool,
    ) -> f64 {
        poll_until(&format!("a value of {promql}"), timeout, || async {
            match self.query(promql).await?.as_slice() {
                [sample] if condition(sample.value) => Ok(sample.value),
                samples => Err(format!("{samples:?}")),
            }
        })
        .await
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    // Prometheus writes special values as "NaN", "+Inf" and "-Inf".
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse()
            .map_err(|e| format!("Prometheus sent the value {other:?}: {e}")),
    }
}
