//! One POST of a rendered payload to a webhook, judged for retrying.

use std::time::Duration;

use reqwest::{StatusCode, header};

use super::{WebhookUrl, retry::Failure, text};
use crate::checks::{describe, fmt_duration};

/// The `Content-Type` of Slack and Teams payloads.
pub(crate) const JSON: &str = "application/json";

/// The most of an error response's body read, for its message.
const MAX_ERROR_BODY_BYTES: usize = 4096;
/// The most of it quoted in an error.
const MAX_ERROR_BODY_CHARS: usize = 200;

/// A rendered request, sent once per attempt.
pub(crate) struct Post<'a> {
    url: &'a WebhookUrl,
    body: String,
    content_type: &'static str,
    timeout: Duration,
}

impl<'a> Post<'a> {
    /// A POST of `body` as `content_type` to `url`, bounded by `timeout`.
    pub(crate) fn new(
        url: &'a WebhookUrl,
        body: String,
        content_type: &'static str,
        timeout: Duration,
    ) -> Self {
        Post {
            url,
            body,
            content_type,
            timeout,
        }
    }

    /// One attempt: 2xx succeeds; no answer, 408, 429 and 5xx may pass;
    /// any other status will not.
    pub(crate) async fn send(&self, http: &reqwest::Client) -> Result<(), Failure> {
        let url = self.url.expose();
        let response = http
            .post(url.clone())
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, self.content_type)
            .body(self.body.clone())
            .send()
            .await
            .map_err(|e| self.request_failure(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = error_body(response).await;
        let mut reason = format!("the webhook answered {status}");
        let excerpt = text::truncate(&text::one_line(&self.redact(&body)), MAX_ERROR_BODY_CHARS);
        if !excerpt.is_empty() {
            reason.push_str(": ");
            reason.push_str(&excerpt);
        }
        if retryable(status) {
            Err(Failure::Transient {
                reason,
                retry_after,
            })
        } else {
            Err(Failure::Permanent(reason))
        }
    }

    fn request_failure(&self, error: reqwest::Error) -> Failure {
        // The URL is the credential of most webhooks: drop it from the error,
        // and from anything its causes may repeat.
        let error = error.without_url();
        if error.is_timeout() {
            return Failure::transient(format!(
                "no answer from the webhook within {}",
                fmt_duration(self.timeout)
            ));
        }
        let reason = format!("posting to the webhook: {}", self.redact(&describe(&error)));
        if error.is_builder() {
            Failure::Permanent(reason)
        } else {
            Failure::transient(reason)
        }
    }

    /// `text` without the URL, its path or its query, which a receiver
    /// may echo in an error page.
    fn redact(&self, text: &str) -> String {
        let url = self.url.expose();
        let mut out = text.replace(url.as_str(), "<webhook>");
        if let Some(query) = url.query().filter(|q| !q.is_empty()) {
            out = out.replace(query, "<redacted>");
        }
        if url.path().len() > 1 {
            out = out.replace(url.path(), "/<redacted>");
        }
        out
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The start of an error response's body; a receiver's error page is not
/// worth waiting for or buffering whole.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY_BYTES);
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_worth_retrying() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                retryable(StatusCode::from_u16(code).unwrap_or_default()),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 410, 301] {
            assert!(
                !retryable(StatusCode::from_u16(code).unwrap_or_default()),
                "{code}"
            );
        }
    }

    #[test]
    fn echoes_of_the_url_are_redacted() {
        let url = WebhookUrl::parse("https://hooks.example/services/T0/SECRET?sig=KEY")
            .unwrap_or_else(|e| panic!("{e}"));
        let post = Post::new(&url, String::new(), JSON, Duration::from_secs(1));
        let text = post.redact(
            "Cannot POST /services/T0/SECRET; see https://hooks.example/services/T0/SECRET?sig=KEY (sig=KEY)",
        );
        assert!(!text.contains("SECRET") && !text.contains("KEY"), "{text}");
    }
}
