//! The `http` verification check (runbook 3.1): one request to the new
//! color, judged by its status and body.

use std::time::{Duration, Instant};

use regex::Regex;

use super::{Measurement, describe_request_error, fmt_duration, parse_http_url};
use crate::api::checks::{BodyMatch, HttpCheck, HttpMethod};

/// Per-request timeout when the check sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a response body read and matched; a health or API answer
/// is far smaller, and a check must not buffer whatever a target sends.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A compiled `expectBody`.
#[derive(Clone, Debug)]
pub enum BodyMatcher {
    /// The body must match this regular expression.
    Regex(Regex),
    /// The body must be JSON with a field at this pointer, equal (as text)
    /// to `equals` when given.
    JsonPointer {
        /// The RFC 6901 pointer.
        pointer: String,
        /// The expected value as text.
        equals: Option<String>,
    },
}

impl BodyMatcher {
    /// Compiles an `expectBody`, so that a regex that does not compile is
    /// found before the check runs.
    pub fn compile(body_match: &BodyMatch) -> Result<Self, String> {
        match (&body_match.regex, &body_match.json_pointer) {
            (Some(pattern), None) => Regex::new(pattern)
                .map(BodyMatcher::Regex)
                .map_err(|e| format!("expectBody.regex {pattern:?} does not compile: {e}")),
            (None, Some(pointer)) if pointer.is_empty() || pointer.starts_with('/') => {
                Ok(BodyMatcher::JsonPointer {
                    pointer: pointer.clone(),
                    equals: body_match.equals.clone(),
                })
            }
            (None, Some(pointer)) => Err(format!(
                "expectBody.jsonPointer {pointer:?} must be empty or start with '/'"
            )),
            _ => Err("expectBody sets exactly one of regex or jsonPointer".to_owned()),
        }
    }

    /// Whether `body` matches; the error says how it does not.
    pub fn check(&self, body: &str) -> Result<(), String> {
        match self {
            BodyMatcher::Regex(regex) if regex.is_match(body) => Ok(()),
            BodyMatcher::Regex(regex) => Err(format!(
                "the body does not match /{}/: {}",
                regex.as_str(),
                excerpt(body)
            )),
            BodyMatcher::JsonPointer { pointer, equals } => {
                let json: serde_json::Value = serde_json::from_str(body)
                    .map_err(|e| format!("the body is not JSON ({e}): {}", excerpt(body)))?;
                let field = json
                    .pointer(pointer)
                    .ok_or_else(|| format!("the JSON body has no field at {pointer:?}"))?;
                match equals {
                    None => Ok(()),
                    Some(expected) => {
                        let actual = json_as_text(field);
                        if &actual == expected {
                            Ok(())
                        } else {
                            Err(format!("{pointer} is {actual:?}, expected {expected:?}"))
                        }
                    }
                }
            }
        }
    }
}

/// A JSON value as text for `equals`: strings without quotes, everything
/// else as JSON (`true`, `3`, `null`, `{"a":1}`).
pub fn json_as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first 200 characters of a body, for messages.
fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let trimmed = body.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &trimmed[..cut]),
        None => format!("{trimmed:?}"),
    }
}

/// The statuses that pass: the check's, or 200.
pub fn expected_statuses(check: &HttpCheck) -> Vec<u16> {
    if check.expect_status.is_empty() {
        vec![200]
    } else {
        check.expect_status.clone()
    }
}

fn method(method: Option<HttpMethod>) -> reqwest::Method {
    match method.unwrap_or_default() {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Head => reqwest::Method::HEAD,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
        HttpMethod::Options => reqwest::Method::OPTIONS,
    }
}

/// Reads at most [`MAX_BODY_BYTES`] of a response body.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<String, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(format!(
                    "reading the body: {}",
                    describe_request_error(&e, timeout)
                ));
            }
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One measurement of an `http` check against `url`, which the caller
/// resolved from the check's `url`, or from the Service, `port` and `path`.
/// `headers` are the check's headers with values from Secrets resolved.
///
/// Passes when the status is expected and the body matches `expectBody`.
/// A target that cannot be reached or does not answer within the timeout
/// **fails**: this check verifies the new color, and a color that does not
/// answer is not fit for traffic. A configuration error (a URL that is not
/// http(s), a header that is not valid, a regex that does not compile) also
/// fails, naming the error.
pub async fn http(
    client: &reqwest::Client,
    url: &str,
    check: &HttpCheck,
    headers: &[(String, String)],
) -> Measurement {
    let timeout = check.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get());
    let method = method(check.method);
    let target = match parse_http_url(url) {
        Ok(target) => target,
        Err(e) => return Measurement::fail(None, format!("not requesting: {e}")),
    };
    let matcher = match check.expect_body.as_ref().map(BodyMatcher::compile) {
        None => None,
        Some(Ok(matcher)) => Some(matcher),
        Some(Err(e)) => return Measurement::fail(None, e),
    };
    let mut request = client.request(method.clone(), target).timeout(timeout);
    for (name, value) in headers {
        let name = match reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => name,
            Err(e) => {
                return Measurement::fail(None, format!("header name {name:?} is not valid: {e}"));
            }
        };
        // Header values may come from Secrets: never echo them.
        let Ok(value) = reqwest::header::HeaderValue::from_str(value) else {
            return Measurement::fail(
                None,
                format!("the value of header {name} is not a valid header value"),
            );
        };
        request = request.header(name, value);
    }
    if let Some(body) = &check.body {
        request = request.body(body.clone());
    }

    let what = format!("{method} {url}");
    let started = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Measurement::fail(
                None,
                format!("{what}: {}", describe_request_error(&e, timeout)),
            );
        }
    };
    let status = response.status().as_u16();
    let value = Some(status.to_string());
    let expected = expected_statuses(check);
    if !expected.contains(&status) {
        let body = read_body(response, timeout).await.unwrap_or_default();
        return Measurement::fail(
            value,
            format!(
                "{what} answered {status}, expected {}: {}",
                list(&expected),
                excerpt(&body)
            ),
        );
    }
    let Some(matcher) = matcher else {
        return Measurement::pass(
            value,
            format!(
                "{what} answered {status} in {}",
                fmt_duration(started.elapsed())
            ),
        );
    };
    let body = match read_body(response, timeout).await {
        Ok(body) => body,
        Err(e) => return Measurement::fail(value, format!("{what} answered {status}; {e}")),
    };
    match matcher.check(&body) {
        Ok(()) => Measurement::pass(
            value,
            format!(
                "{what} answered {status} with a matching body in {}",
                fmt_duration(started.elapsed())
            ),
        ),
        Err(why) => Measurement::fail(value, format!("{what} answered {status}, but {why}")),
    }
}

fn list(statuses: &[u16]) -> String {
    let texts: Vec<String> = statuses.iter().map(u16::to_string).collect();
    texts.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str) -> BodyMatcher {
        BodyMatcher::compile(&BodyMatch {
            regex: Some(pattern.into()),
            json_pointer: None,
            equals: None,
        })
        .unwrap()
    }

    fn pointer(pointer: &str, equals: Option<&str>) -> BodyMatcher {
        BodyMatcher::compile(&BodyMatch {
            regex: None,
            json_pointer: Some(pointer.into()),
            equals: equals.map(Into::into),
        })
        .unwrap()
    }

    #[test]
    fn regex_matches_anywhere_in_the_body() {
        assert!(
            regex("\"status\":\\s*\"ok\"")
                .check(r#"{"status": "ok"}"#)
                .is_ok()
        );
        let err = regex("^ok$").check("degraded").unwrap_err();
        assert!(err.contains("/^ok$/") && err.contains("degraded"), "{err}");
    }

    #[test]
    fn a_regex_that_does_not_compile_is_found_up_front() {
        let err = BodyMatcher::compile(&BodyMatch {
            regex: Some("(unclosed".into()),
            json_pointer: None,
            equals: None,
        })
        .unwrap_err();
        assert!(err.contains("(unclosed"), "{err}");
    }

    #[test]
    fn json_pointer_finds_and_compares_fields() {
        let body = r#"{"status":"ok","checks":{"db":true,"replicas":3}}"#;
        assert!(pointer("/status", Some("ok")).check(body).is_ok());
        assert!(pointer("/checks/db", Some("true")).check(body).is_ok());
        assert!(pointer("/checks/replicas", Some("3")).check(body).is_ok());
        assert!(pointer("/checks", None).check(body).is_ok());
        let err = pointer("/status", Some("degraded"))
            .check(body)
            .unwrap_err();
        assert_eq!(err, r#"/status is "ok", expected "degraded""#);
        let err = pointer("/missing", None).check(body).unwrap_err();
        assert!(err.contains("no field at \"/missing\""), "{err}");
        let err = pointer("/status", None).check("<html>").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    #[test]
    fn json_pointer_must_be_a_pointer() {
        assert!(
            BodyMatcher::compile(&BodyMatch {
                regex: None,
                json_pointer: Some("status".into()),
                equals: None
            })
            .is_err()
        );
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = "x".repeat(1000);
        assert!(excerpt(&long).chars().count() < 210);
        assert_eq!(excerpt(" ok \n"), "\"ok\"");
    }

    #[test]
    fn expected_status_defaults_to_200() {
        let check: HttpCheck =
            serde_json::from_value(serde_json::json!({"url": "http://x/"})).unwrap();
        assert_eq!(expected_statuses(&check), [200]);
    }

    #[tokio::test]
    async fn a_non_http_url_fails_without_a_request() {
        let client = super::super::http_client(Duration::from_secs(1)).unwrap();
        let check: HttpCheck =
            serde_json::from_value(serde_json::json!({"url": "http://x/"})).unwrap();
        let m = http(&client, "file:///etc/passwd", &check, &[]).await;
        assert_eq!(m.outcome, super::super::Outcome::Fail);
        assert!(m.message.contains("only http and https"), "{}", m.message);
    }
}
