//! Notification delivery against local receivers, through the public API:
//! Slack, Teams and CloudEvents webhooks posted to a [`WebhookReceiver`]
//! that fails on cue, e-mail handed to an [`SmtpSink`]. No cluster needed.

use std::time::{Duration, Instant};

use lockkeeper::api::notify::NotifyOn;
use lockkeeper::api::release::Changes;
use lockkeeper::checks::http_client;
use lockkeeper::notifier::{
    Channel, Delivery, Detail, EmailTarget, Message, Resolved, RetryPolicy, SecretValue, SmtpLogin,
    SmtpSettings, SmtpTls, WebhookUrl, cloudevents, deliver_resolved, email,
};
use tokio::net::TcpListener;

use crate::support::{SmtpSink, WebhookReceiver};

/// The message every delivery test sends: a rollback with changes, a reason
/// holding an in-cluster URL, and step details.
fn message() -> Message {
    Message {
        namespace: "prod".into(),
        release: "shop".into(),
        uid: Some("0b8f-uid".into()),
        revision: 7,
        version: "v1.4.2".into(),
        kind: NotifyOn::RolledBack,
        summary: "Rolled back to v1.4.1 on blue".into(),
        reason: Some(
            "check http-health failed: GET http://shop.prod.svc:8080/healthz answered 500".into(),
        ),
        changes: Changes {
            features: vec!["Faster checkout".into(), "Pay with wallets".into()],
            fixes: vec!["Cart total <!channel> rounding".into()],
            ..Changes::default()
        },
        time: "2025-03-01T12:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("parsing the message's time: {e}")),
        details: vec![
            Detail {
                step: "preflight".into(),
                state: "Succeeded".into(),
                message: "all 3 checks passed".into(),
            },
            Detail {
                step: "verify/http-health".into(),
                state: "Failed".into(),
                message: "answered 500 3 times".into(),
            },
        ],
    }
}

/// `attempts` attempts with waits short enough for a test.
fn fast(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        attempt_timeout: Duration::from_secs(5),
    }
}

/// A client built on this test's runtime.
fn http() -> reqwest::Client {
    http_client(Duration::from_secs(2)).unwrap_or_else(|e| panic!("building the HTTP client: {e}"))
}

fn url(text: &str) -> WebhookUrl {
    WebhookUrl::parse(text).unwrap_or_else(|e| panic!("parsing webhook URL: {e}"))
}

/// A path that looks like a Slack webhook's, credential included.
const SECRET_PATH: &str = "/services/T0/SECRET-TOKEN";

// ---- webhooks ----

#[tokio::test]
async fn slack_is_retried_through_server_errors() {
    let receiver = WebhookReceiver::start().await;
    receiver.fail_next_with(2, 503, "busy");
    let resolved = Resolved::Slack {
        url: url(&receiver.url(SECRET_PATH)),
    };
    let delivery = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(4))
        .await
        .unwrap_or_else(|e| panic!("delivering to Slack: {e}"));
    assert_eq!(
        delivery,
        Delivery {
            channel: Channel::Slack,
            attempts: 3
        }
    );
    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    let last = &requests[2];
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, SECRET_PATH);
    assert_eq!(last.header("Content-Type"), Some("application/json"));
    assert!(last.json()["blocks"].is_array(), "{}", last.text());
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let receiver = WebhookReceiver::start().await;
    receiver.fail_next_with(1, 429, "slow down");
    let resolved = Resolved::Teams {
        url: url(&receiver.url(SECRET_PATH)),
    };
    let delivery = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(2))
        .await
        .unwrap_or_else(|e| panic!("delivering to Teams: {e}"));
    assert_eq!(delivery.attempts, 2);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].json()["type"], "message");
}

#[tokio::test]
async fn cloudevents_keep_their_id_across_retries() {
    let receiver = WebhookReceiver::start().await;
    receiver.fail_next(1, 502);
    let resolved = Resolved::Webhook {
        url: url(&receiver.url("/events?sig=abc")),
    };
    deliver_resolved(&http(), "audit", &resolved, &message(), &fast(3))
        .await
        .unwrap_or_else(|e| panic!("delivering the CloudEvent: {e}"));
    let requests = receiver.wait_for_requests(2, Duration::from_secs(5)).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].path, "/events");
    assert_eq!(requests[1].query.as_deref(), Some("sig=abc"));
    let ids: Vec<String> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.header("content-type"), Some(cloudevents::CONTENT_TYPE));
            r.json()["id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], cloudevents::event_id(&message()));
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_the_url_stays_secret() {
    let receiver = WebhookReceiver::start().await;
    receiver.fail_next_with(5, 404, &format!("Cannot POST {SECRET_PATH}"));
    let resolved = Resolved::Slack {
        url: url(&receiver.url(SECRET_PATH)),
    };
    let err = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(4))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered despite the 404"));
    assert_eq!(receiver.requests().len(), 1, "a 404 must not be retried");
    assert_eq!(err.category(), "rejected");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("Slack notification `ops` was refused"),
        "{text}"
    );
    assert!(text.contains("404 Not Found"), "{text}");
    assert!(!text.contains("SECRET-TOKEN"), "{text}");
    assert!(!format!("{err:?}").contains("SECRET-TOKEN"));
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let receiver = WebhookReceiver::start().await;
    receiver.fail_next_with(5, 400, "invalid_payload");
    let resolved = Resolved::Teams {
        url: url(&receiver.url(SECRET_PATH)),
    };
    let err = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(4))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered despite the 400"));
    assert_eq!(receiver.requests().len(), 1);
    assert!(
        err.to_string()
            .ends_with("400 Bad Request: invalid_payload"),
        "{err}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_fails_after_every_attempt() {
    let receiver = WebhookReceiver::start().await;
    let resolved = Resolved::Webhook {
        url: url(&receiver.url("/hooks/SECRET-TOKEN?sig=SECRET-SIG")),
    };
    receiver.stop().await;
    let started = Instant::now();
    let err = deliver_resolved(&http(), "audit", &resolved, &message(), &fast(3))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered to a stopped receiver"));
    // Two waits: 5ms, then 10ms.
    assert!(started.elapsed() >= Duration::from_millis(15));
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.starts_with("webhook notification `audit` not delivered after 3 attempts: "),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_stopped_receiver_also_closes_kept_alive_connections() {
    let receiver = WebhookReceiver::start().await;
    let resolved = Resolved::Slack {
        url: url(&receiver.url(SECRET_PATH)),
    };
    // One client for both deliveries: the first leaves a pooled connection.
    let http = http();
    deliver_resolved(&http, "ops", &resolved, &message(), &fast(1))
        .await
        .unwrap_or_else(|e| panic!("delivering before the stop: {e}"));
    receiver.stop().await;
    let err = deliver_resolved(&http, "ops", &resolved, &message(), &fast(2))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered to a stopped receiver"));
    assert!(err.is_transient(), "{err}");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a silent listener: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the silent listener's address: {e}"));
    // Accepts and holds every connection without a word.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_millis(200),
        ..fast(2)
    };
    let resolved = Resolved::Slack {
        url: url(&format!("http://{addr}{SECRET_PATH}")),
    };
    let err = deliver_resolved(&http(), "ops", &resolved, &message(), &policy)
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered to a silent receiver"));
    silent.abort();
    let text = err.to_string();
    assert!(text.contains("after 2 attempts"), "{text}");
    assert!(
        text.contains("no answer from the webhook within 200ms"),
        "{text}"
    );
}

// ---- e-mail ----

fn email_target(port: u16) -> Resolved {
    Resolved::Email(EmailTarget {
        smtp: SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            login: None,
            from: Some("ignored@example.com".into()),
            tls: SmtpTls::None,
        },
        from: "lockkeeper@example.com".into(),
        to: vec!["ops@example.com".into(), "dev@example.com".into()],
    })
}

#[tokio::test]
async fn email_reaches_the_smtp_server() {
    let sink = SmtpSink::start().await;
    let delivery = deliver_resolved(
        &http(),
        "mail",
        &email_target(sink.port()),
        &message(),
        &fast(2),
    )
    .await
    .unwrap_or_else(|e| panic!("delivering the e-mail: {e}"));
    assert_eq!(
        delivery,
        Delivery {
            channel: Channel::Email,
            attempts: 1
        }
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "lockkeeper@example.com");
    assert_eq!(mail.to, ["ops@example.com", "dev@example.com"]);
    assert_eq!(
        mail.subject(),
        "[Lockkeeper] prod/shop v1.4.2 (revision 7) was rolled back"
    );
    assert_eq!(
        mail.header("to").as_deref(),
        Some("ops@example.com, dev@example.com")
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("lockkeeper@example.com")
    );
    let body = mail.body();
    // lettre ends the data with another CRLF before the final `.`.
    assert_eq!(body.trim_end(), email::render(&message()).body.trim_end());
    assert!(body.contains("Rolled back to v1.4.1 on blue"), "{body}");
    assert!(body.contains("    - Faster checkout\n"), "{body}");
    assert!(!mail.data.contains("shop.prod.svc"), "{}", mail.data);
}

#[tokio::test]
async fn long_and_non_ascii_mail_decodes_to_what_was_rendered() {
    let sink = SmtpSink::start().await;
    let mut m = message();
    m.version = format!("v1.4.2-größer-{}", "x".repeat(120));
    m.summary = format!("Zurückgerollt auf v1.4.1: {}", "ä".repeat(100));
    deliver_resolved(&http(), "mail", &email_target(sink.port()), &m, &fast(1))
        .await
        .unwrap_or_else(|e| panic!("delivering the e-mail: {e}"));
    let mails = sink.wait_for_mails(1, Duration::from_secs(5)).await;
    let mail = &mails[0];
    let rendered = email::render(&m);
    assert_eq!(mail.subject(), rendered.subject, "{}", mail.data);
    assert_eq!(
        mail.body().trim_end(),
        rendered.body.trim_end(),
        "{}",
        mail.data
    );
}

#[tokio::test]
async fn a_busy_smtp_server_is_retried() {
    let sink = SmtpSink::start().await;
    sink.set_busy(1);
    let delivery = deliver_resolved(
        &http(),
        "mail",
        &email_target(sink.port()),
        &message(),
        &fast(3),
    )
    .await
    .unwrap_or_else(|e| panic!("delivering the e-mail: {e}"));
    assert_eq!(delivery.attempts, 2);
    assert_eq!(sink.sessions(), 2);
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn a_refused_recipient_is_not_retried() {
    let sink = SmtpSink::start().await;
    sink.refuse_recipients(true);
    let err = deliver_resolved(
        &http(),
        "mail",
        &email_target(sink.port()),
        &message(),
        &fast(3),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("delivered despite the refused recipients"));
    assert_eq!(sink.sessions(), 1);
    assert!(sink.mails().is_empty());
    let text = err.to_string();
    assert!(
        text.starts_with("e-mail notification `mail` was refused: "),
        "{text}"
    );
    assert!(text.contains("no such user"), "{text}");
}

#[tokio::test]
async fn an_unreachable_smtp_server_fails_after_every_attempt() {
    let sink = SmtpSink::start().await;
    sink.stop().await;
    let err = deliver_resolved(
        &http(),
        "mail",
        &email_target(sink.port()),
        &message(),
        &fast(3),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("delivered to a stopped SMTP server"));
    assert_eq!(sink.sessions(), 0);
    assert_eq!(err.category(), "undelivered");
    let text = err.to_string();
    assert!(
        text.starts_with("e-mail notification `mail` not delivered after 3 attempts: "),
        "{text}"
    );
}

#[tokio::test]
async fn smtp_credentials_never_show_in_errors() {
    let sink = SmtpSink::start().await;
    sink.stop().await;
    let Resolved::Email(mut target) = email_target(sink.port()) else {
        panic!("email_target is not e-mail");
    };
    target.smtp.login = Some(SmtpLogin {
        username: "bot".into(),
        password: SecretValue::new("hunter2"),
    });
    let resolved = Resolved::Email(target);
    let err = deliver_resolved(&http(), "mail", &resolved, &message(), &fast(1))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered to a stopped SMTP server"));
    let text = err.to_string();
    assert!(text.contains("not delivered after 1 attempt: "), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?} {resolved:?}").contains("hunter2"));
}
