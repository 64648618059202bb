//! The `load` verification check (runbook 3.2, `ab -n 100 -c 10`): N real
//! requests at concurrency C, latency percentiles and error rate against
//! thresholds.
//!
//! Connections are kept alive and reused across requests, as `ab -k` does
//! and as real clients and load balancers do: the probe measures the
//! application's answers, not TCP (and TLS) setup, which would otherwise
//! dominate a fast endpoint's latency and vary with the prober's host.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{Measurement, describe_request_error, fmt_duration, parse_http_url};
use crate::api::checks::LoadCheck;

/// Per-request timeout of the probe (`ab`'s default, `-s 30`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a load run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: u32,
    /// Requests that failed: no response, or a status outside 2xx.
    pub errors: u32,
    /// Latency of each request that got a response, sorted ascending.
    /// Requests without a response have no latency.
    pub latencies: Vec<Duration>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// The first error seen, for the message.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// The `p`th percentile latency (nearest rank), if any request got a
    /// response.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies, p)
    }

    /// Failed requests as a fraction of all (0 for none sent).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            f64::from(self.errors) / f64::from(self.requests)
        }
    }
}

/// The `p`th percentile (0 < p ≤ 100) of ascending-sorted `sorted` by the
/// nearest-rank method: the smallest value with at least p% of the values
/// at or below it, i.e. the value at rank ⌈p/100 · n⌉. `None` for no
/// values; `p` is clamped to (0, 100].
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    // The rank is computed in integers where possible so that e.g. the
    // 95th of 100 is exactly rank 95, not 95.00000000000001 rounded up.
    let exact = p * n as f64 / 100.0;
    let rounded = exact.round();
    let rank = if (exact - rounded).abs() < 1e-9 {
        rounded
    } else {
        exact.ceil()
    };
    // `rank` is within [0, n] as p is clamped; the cast cannot overflow.
    let rank = (rank as usize).clamp(1, n);
    sorted.get(rank - 1).copied()
}

/// Sends `requests` GETs to `url`, `concurrency` at a time, over a
/// connection pool (keep-alive), and records each request's latency from
/// send to the end of its body.
pub async fn run_load(
    client: &reqwest::Client,
    url: &reqwest::Url,
    requests: u32,
    concurrency: u32,
    timeout: Duration,
) -> LoadReport {
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.clamp(1, requests.max(1)))
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    results.push(one_request(&client, &url, timeout).await);
                }
                results
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests as usize);
    let mut errors = 0u32;
    let mut first_error = None;
    let mut sent = 0u32;
    for worker in workers {
        let results = match worker.await {
            Ok(results) => results,
            Err(e) => {
                first_error.get_or_insert_with(|| format!("a load worker stopped: {e}"));
                continue;
            }
        };
        for result in results {
            sent += 1;
            match result {
                RequestResult::Answered { latency, ok } => {
                    latencies.push(latency);
                    if let Err(why) = ok {
                        errors += 1;
                        first_error.get_or_insert(why);
                    }
                }
                RequestResult::NoAnswer(why) => {
                    errors += 1;
                    first_error.get_or_insert(why);
                }
            }
        }
    }
    // Requests a stopped worker never sent count as errors.
    errors += requests.saturating_sub(sent);
    latencies.sort_unstable();
    LoadReport {
        requests,
        errors,
        latencies,
        elapsed: started.elapsed(),
        first_error,
    }
}

enum RequestResult {
    Answered {
        latency: Duration,
        ok: Result<(), String>,
    },
    NoAnswer(String),
}

async fn one_request(
    client: &reqwest::Client,
    url: &reqwest::Url,
    timeout: Duration,
) -> RequestResult {
    let started = Instant::now();
    let response = match client.get(url.clone()).timeout(timeout).send().await {
        Ok(response) => response,
        Err(e) => return RequestResult::NoAnswer(describe_request_error(&e, timeout)),
    };
    let status = response.status();
    // The body is part of the answer, as for ab.
    let body = response.bytes().await;
    let latency = started.elapsed();
    match body {
        Err(e) => RequestResult::NoAnswer(format!(
            "reading the body: {}",
            describe_request_error(&e, timeout)
        )),
        Ok(_) if status.is_success() => RequestResult::Answered {
            latency,
            ok: Ok(()),
        },
        Ok(_) => RequestResult::Answered {
            latency,
            ok: Err(format!("HTTP {status}")),
        },
    }
}

/// Judges a load run against a check's thresholds. Pure. A threshold the
/// check does not set is not checked, except the error rate, which
/// defaults to 0. A run where no request got a response fails.
pub fn evaluate_load(report: &LoadReport, check: &LoadCheck) -> Measurement {
    let (p50, p95, p99) = match (
        report.percentile(50.0),
        report.percentile(95.0),
        report.percentile(99.0),
    ) {
        (Some(p50), Some(p95), Some(p99)) => (p50, p95, p99),
        _ => {
            return Measurement::fail(
                Some("error rate 1".to_owned()),
                format!(
                    "none of {} requests got a response: {}",
                    report.requests,
                    report
                        .first_error
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            );
        }
    };
    let error_rate = report.error_rate();
    let value = format!(
        "p50 {} p95 {} p99 {} errors {:.3}",
        fmt_duration(p50),
        fmt_duration(p95),
        fmt_duration(p99),
        error_rate
    );
    let mut breaches = Vec::new();
    for (name, measured, limit) in [
        ("p50", p50, check.max_p50),
        ("p95", p95, check.max_p95),
        ("p99", p99, check.max_p99),
    ] {
        if let Some(limit) = limit
            && measured > limit.get()
        {
            breaches.push(format!(
                "{name} {} > {}",
                fmt_duration(measured),
                fmt_duration(limit.get())
            ));
        }
    }
    let max_error_rate = check.max_error_rate.unwrap_or(0.0);
    if error_rate > max_error_rate {
        breaches.push(format!(
            "error rate {error_rate:.3} > {max_error_rate} ({} of {}, first: {})",
            report.errors,
            report.requests,
            report.first_error.as_deref().unwrap_or("-")
        ));
    }
    let summary = format!(
        "{} requests at concurrency {} in {}: {value}",
        report.requests,
        check.concurrency,
        fmt_duration(report.elapsed)
    );
    if breaches.is_empty() {
        Measurement::pass(Some(value), summary)
    } else {
        Measurement::fail(Some(value), format!("{summary}; {}", breaches.join(", ")))
    }
}

/// One measurement of a `load` check against `url`, which the caller
/// resolved from the check's `url` or from the Service, `port` and `path`.
/// A URL that is not http(s) fails without a request.
pub async fn load(client: &reqwest::Client, url: &str, check: &LoadCheck) -> Measurement {
    let target = match parse_http_url(url) {
        Ok(target) => target,
        Err(e) => return Measurement::fail(None, format!("not probing: {e}")),
    };
    let report = run_load(
        client,
        &target,
        check.requests,
        check.concurrency,
        REQUEST_TIMEOUT,
    )
    .await;
    evaluate_load(&report, check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Duration as ApiDuration;
    use crate::checks::Outcome;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 95.0), Some(95));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        // The classic example: 15, 20, 35, 40, 50.
        let values = [15, 20, 35, 40, 50];
        assert_eq!(percentile(&values, 5.0), Some(15));
        assert_eq!(percentile(&values, 30.0), Some(20));
        assert_eq!(percentile(&values, 40.0), Some(20));
        assert_eq!(percentile(&values, 50.0), Some(35));
        assert_eq!(percentile(&values, 100.0), Some(50));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
    }

    proptest! {
        /// The nearest-rank percentile is a member of the data with at
        /// least p% of values at or below it and fewer than p% strictly
        /// below it; and it grows with p.
        #[test]
        fn percentile_is_the_nearest_rank(
            mut values in proptest::collection::vec(0u32..1000, 1..200),
            p in 0.1f64..100.0, q in 0.1f64..100.0,
        ) {
            values.sort_unstable();
            let n = values.len() as f64;
            let v = percentile(&values, p).unwrap();
            let at_or_below = values.iter().filter(|x| **x <= v).count() as f64;
            let below = values.iter().filter(|x| **x < v).count() as f64;
            prop_assert!(at_or_below / n * 100.0 >= p - 1e-6);
            prop_assert!(below / n * 100.0 < p + 1e-6);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            prop_assert!(percentile(&values, lo) <= percentile(&values, hi));
        }
    }

    fn check(extra: serde_json::Value) -> LoadCheck {
        let mut spec = serde_json::json!({"url": "http://x/", "requests": 100, "concurrency": 10});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(spec).unwrap()
    }

    fn report(latencies_ms: &[u64], errors: u32) -> LoadReport {
        let mut latencies: Vec<Duration> = latencies_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        latencies.sort_unstable();
        LoadReport {
            requests: latencies_ms.len() as u32 + errors,
            errors,
            latencies,
            elapsed: Duration::from_secs(1),
            first_error: (errors > 0).then(|| "connection refused".to_owned()),
        }
    }

    #[test]
    fn thresholds_pass_and_fail() {
        let fast: Vec<u64> = (1..=100).collect();
        let m = evaluate_load(
            &report(&fast, 0),
            &check(serde_json::json!({"maxP95": "100ms"})),
        );
        assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
        assert_eq!(
            m.value.as_deref(),
            Some("p50 50ms p95 95ms p99 99ms errors 0.000")
        );
        let m = evaluate_load(
            &report(&fast, 0),
            &check(serde_json::json!({"maxP95": "90ms"})),
        );
        assert_eq!(m.outcome, Outcome::Fail);
        assert!(m.message.contains("p95 95ms > 90ms"), "{}", m.message);
        let m = evaluate_load(
            &report(&fast, 0),
            &check(serde_json::json!({"maxP50": "10ms", "maxP99": "1s"})),
        );
        assert!(
            m.message.contains("p50 50ms > 10ms") && !m.message.contains("p99 99ms >"),
            "{}",
            m.message
        );
    }

    #[test]
    fn errors_fail_unless_tolerated() {
        let some: Vec<u64> = vec![5; 95];
        let m = evaluate_load(&report(&some, 5), &check(serde_json::json!({})));
        assert_eq!(m.outcome, Outcome::Fail);
        assert!(
            m.message.contains("error rate 0.050 > 0") && m.message.contains("connection refused"),
            "{}",
            m.message
        );
        let m = evaluate_load(
            &report(&some, 5),
            &check(serde_json::json!({"maxErrorRate": 0.05})),
        );
        assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
    }

    #[test]
    fn no_response_at_all_fails() {
        let m = evaluate_load(
            &report(&[], 100),
            &check(serde_json::json!({"maxErrorRate": 1.0})),
        );
        assert_eq!(m.outcome, Outcome::Fail);
        assert!(m.message.contains("none of 100 requests"), "{}", m.message);
    }

    #[test]
    fn api_durations_are_limits() {
        let c = check(serde_json::json!({"maxP99": "1.5s"}));
        assert_eq!(c.max_p99, Some(ApiDuration::from_millis(1500)));
    }
}
