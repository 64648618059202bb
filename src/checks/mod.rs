//! The measurement layer of preflight (runbook 1.2, 1.4) and verification
//! (3.1–3.3): each function here takes one measurement and says whether it
//! passed, failed or gave no answer. Deciding when to measure, and what a
//! release does with a failed check, is the runbook's business, not this
//! module's; [`measure::Tally`] only turns a series of measurements into a
//! verdict.
//!
//! What counts as a failure and what as no answer:
//!
//! * A verification target (the new color, over `http` or `load`) that
//!   cannot be reached **fails**: being reachable is the first thing being
//!   verified.
//! * A dependency that cannot be reached **fails** preflight, with the reason.
//! * Prometheus being unreachable, an empty result or NaN is
//!   **inconclusive**: it says nothing about the new color, so it must
//!   never pass, and `inconclusiveLimit` bounds how long it is tolerated.
//! * Configuration that can never work (a condition that does not parse, a
//!   regex that does not compile, a query Prometheus rejects, a URL that is
//!   not http(s)) is an error for the caller to surface as `Stalled` or
//!   `Failed`, detectable up front where possible.

pub mod capacity;
pub mod dependency;
pub mod http;
pub mod load;
pub mod measure;
pub mod prometheus;
pub mod quantity;

use std::error::Error as StdError;
use std::time::Duration;

pub use measure::{Limits, Measurement, Outcome, Tally, Verdict};

/// The TLS provider every client in this process shares (ring, as kube
/// uses). Installed here too so that a client built before `main` installs
/// it, e.g. in a test, does not find none.
fn ensure_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An HTTP client for checks: connection pooling (keep-alive), no
/// redirects followed (a check measures the URL it names), no proxy from
/// the environment, and `connect_timeout` on connecting. Per-request
/// timeouts are set by each check.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    ensure_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("lockkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client for checks: {}", describe(&e)))
}

/// Parses `url` and rejects any scheme but http and https, so that a check
/// cannot be pointed at `file://` or another protocol.
pub fn parse_http_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(parsed),
        "http" | "https" => Err(format!("{url:?} names no host")),
        other => Err(format!(
            "{url:?} has the scheme {other:?}; only http and https are allowed"
        )),
    }
}

/// An error and its causes on one line (`a: b: c`): reqwest's own message
/// ("error sending request") hides the reason (connection refused, DNS)
/// in its sources.
pub(crate) fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Why a request got no response, in words: a timeout names its limit.
pub(crate) fn describe_request_error(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        format!("no response within {}", fmt_duration(timeout))
    } else {
        describe(error)
    }
}

/// A duration the way the API writes them, to the millisecond (`250ms`,
/// `5s`, `1.5s`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        if ms < 10.0 {
            format!("{ms:.2}ms")
        } else {
            format!("{ms:.0}ms")
        }
    } else {
        let s = ms / 1000.0;
        let text = format!("{s:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(parse_http_url("http://127.0.0.1:8080/health").is_ok());
        assert!(parse_http_url("https://example.com").is_ok());
        let err = parse_http_url("file:///etc/passwd").unwrap_err();
        assert!(err.contains("\"file\""), "{err}");
        assert!(parse_http_url("ftp://example.com").is_err());
        assert!(parse_http_url("not a url").is_err());
        assert!(parse_http_url("http://").is_err());
    }

    #[test]
    fn durations_read_like_the_api_writes_them() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1.50ms");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn describe_includes_the_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("sending the request")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(describe(&e), "sending the request: connection refused");
    }
}
