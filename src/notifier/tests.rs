//! Delivery against local receivers: an HTTP server that fails on cue and
//! an SMTP sink that records what it is handed. No cluster needed.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::api::{
    SecretKeyRef,
    notify::{NotifyOn, WebhookChannel},
    release::Changes,
};

/// The message every renderer test starts from.
pub(crate) fn message() -> Message {
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
            .unwrap_or_else(|e| panic!("{e}")),
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

fn fast(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        attempt_timeout: Duration::from_secs(5),
    }
}

fn http() -> reqwest::Client {
    crate::checks::http_client(Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- wants and channels ----

fn notification(on: Vec<NotifyOn>) -> Notification {
    Notification {
        name: "ops".into(),
        on,
        slack: Some(WebhookChannel {
            webhook_secret_ref: SecretKeyRef {
                name: "slack-hook".into(),
                key: "url".into(),
            },
        }),
        teams: None,
        webhook: None,
        email: None,
    }
}

#[test]
fn an_empty_on_means_the_default_events() {
    let n = notification(vec![]);
    assert!(wants(&n, NotifyOn::AwaitingApproval));
    assert!(wants(&n, NotifyOn::Ready));
    assert!(wants(&n, NotifyOn::RolledBack));
    assert!(wants(&n, NotifyOn::Failed));
    assert!(!wants(&n, NotifyOn::Started));
    assert!(!wants(&n, NotifyOn::Waiting));
}

#[test]
fn an_explicit_on_is_exactly_those_events() {
    let n = notification(vec![NotifyOn::Started, NotifyOn::Failed]);
    assert!(wants(&n, NotifyOn::Started));
    assert!(wants(&n, NotifyOn::Failed));
    assert!(!wants(&n, NotifyOn::Ready));
}

#[test]
fn the_channel_is_the_one_set() {
    let mut n = notification(vec![]);
    assert_eq!(Channel::of(&n), Some(Channel::Slack));
    n.teams = n.slack.take();
    assert_eq!(Channel::of(&n), Some(Channel::Teams));
    n.teams = None;
    assert_eq!(Channel::of(&n), None);
}

// ---- HTTP ----

/// What the receiver was sent.
#[derive(Clone, Debug)]
struct Received {
    content_type: String,
    body: String,
}

struct Receiver {
    failures_left: AtomicUsize,
    failure: StatusCode,
    failure_body: String,
    received: Mutex<Vec<Received>>,
}

/// A webhook on 127.0.0.1 that answers `failure` to the first `failures`
/// requests, then 200. Returns its URL (with a secret-looking path).
async fn receiver(
    failures: usize,
    failure: StatusCode,
    failure_body: &str,
) -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver {
        failures_left: AtomicUsize::new(failures),
        failure,
        failure_body: failure_body.to_owned(),
        received: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(hook).with_state(Arc::clone(&state));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the receiver: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("receiver address: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/services/T0/SECRET-TOKEN"), state)
}

async fn hook(
    State(state): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    lock(&state.received).push(Received { content_type, body });
    let fail = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        (state.failure, state.failure_body.clone())
    } else {
        (StatusCode::OK, "ok".into())
    }
}

fn url(text: &str) -> WebhookUrl {
    WebhookUrl::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn slack_is_retried_through_server_errors() {
    let (hook_url, state) = receiver(2, StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    let resolved = Resolved::Slack {
        url: url(&hook_url),
    };
    let delivery = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(4))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        delivery,
        Delivery {
            channel: Channel::Slack,
            attempts: 3
        }
    );
    let received = lock(&state.received).clone();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2].content_type, "application/json");
    let payload: serde_json::Value =
        serde_json::from_str(&received[2].body).unwrap_or_else(|e| panic!("{e}"));
    assert!(payload["blocks"].is_array());
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let (hook_url, state) = receiver(1, StatusCode::TOO_MANY_REQUESTS, "slow down").await;
    let resolved = Resolved::Teams {
        url: url(&hook_url),
    };
    let delivery = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(delivery.attempts, 2);
    let received = lock(&state.received).clone();
    let payload: serde_json::Value =
        serde_json::from_str(&received[1].body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(payload["type"], "message");
}

#[tokio::test]
async fn cloudevents_keep_their_id_across_retries() {
    let (hook_url, state) = receiver(1, StatusCode::BAD_GATEWAY, "").await;
    let resolved = Resolved::Webhook {
        url: url(&hook_url),
    };
    deliver_resolved(&http(), "audit", &resolved, &message(), &fast(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let received = lock(&state.received).clone();
    assert_eq!(received.len(), 2);
    let ids: Vec<String> = received
        .iter()
        .map(|r| {
            assert_eq!(r.content_type, cloudevents::CONTENT_TYPE);
            let event: serde_json::Value =
                serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}"));
            event["id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], cloudevents::event_id(&message()));
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_the_url_stays_secret() {
    let (hook_url, state) = receiver(
        5,
        StatusCode::NOT_FOUND,
        "Cannot POST /services/T0/SECRET-TOKEN",
    )
    .await;
    let resolved = Resolved::Slack {
        url: url(&hook_url),
    };
    let err = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(4))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    assert_eq!(lock(&state.received).len(), 1, "a 404 must not be retried");
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
    let (hook_url, state) = receiver(5, StatusCode::BAD_REQUEST, "invalid_payload").await;
    let resolved = Resolved::Teams {
        url: url(&hook_url),
    };
    let err = deliver_resolved(&http(), "ops", &resolved, &message(), &fast(4))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    assert_eq!(lock(&state.received).len(), 1);
    assert!(
        err.to_string()
            .ends_with("400 Bad Request: invalid_payload"),
        "{err}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_fails_after_every_attempt() {
    let addr = closed_port().await;
    let resolved = Resolved::Webhook {
        url: url(&format!("http://{addr}/hooks/SECRET-TOKEN?sig=SECRET-SIG")),
    };
    let started = std::time::Instant::now();
    let err = deliver_resolved(&http(), "audit", &resolved, &message(), &fast(3))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    // Two waits: 5ms, then 10ms.
    assert!(started.elapsed() >= Duration::from_millis(15));
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.starts_with("webhook notification `audit` not delivered after 3 attempts: "),
        "{text}"
    );
    assert!(!text.contains("SECRET"), "{text}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
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
        url: url(&format!("http://{addr}/services/SECRET-TOKEN")),
    };
    let err = deliver_resolved(&http(), "ops", &resolved, &message(), &policy)
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    let text = err.to_string();
    assert!(text.contains("after 2 attempts"), "{text}");
    assert!(
        text.contains("no answer from the webhook within 200ms"),
        "{text}"
    );
}

// ---- SMTP ----

/// What the sink was handed in one transaction.
#[derive(Clone, Debug, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

#[derive(Default)]
struct Sink {
    /// Sessions still to be turned away with 421 at the greeting.
    busy_sessions: AtomicUsize,
    /// Whether recipients are refused with 550.
    refuse_recipients: bool,
    sessions: AtomicUsize,
    mails: Mutex<Vec<Mail>>,
}

/// A minimal SMTP server on 127.0.0.1 speaking just enough of RFC 5321
/// for one plain-text message per session.
async fn smtp_sink(sink: Sink) -> (u16, Arc<Sink>) {
    let sink = Arc::new(sink);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the SMTP sink: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let shared = Arc::clone(&sink);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let sink = Arc::clone(&shared);
            tokio::spawn(async move {
                // A session that breaks off just ends.
                let _ = smtp_session(socket, &sink).await;
            });
        }
    });
    (port, sink)
}

async fn smtp_session(socket: TcpStream, sink: &Sink) -> std::io::Result<()> {
    sink.sessions.fetch_add(1, Ordering::SeqCst);
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let busy = sink
        .busy_sessions
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if busy {
        write.write_all(b"421 sink busy, try later\r\n").await?;
        return Ok(());
    }
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let mut mail = Mail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink greets you\r\n250 8BITMIME\r\n",
            "HELO" | "NOOP" => b"250 ok\r\n",
            "RSET" => {
                mail = Mail::default();
                b"250 ok\r\n"
            }
            "MAIL" => {
                mail.from = angle_address(&command);
                b"250 ok\r\n"
            }
            "RCPT" if sink.refuse_recipients => b"550 no such user here\r\n",
            "RCPT" => {
                mail.to.push(angle_address(&command));
                b"250 ok\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    mail.data.push_str(&line);
                }
                lock(&sink.mails).push(std::mem::take(&mut mail));
                b"250 queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

fn angle_address(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

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
    let (port, sink) = smtp_sink(Sink::default()).await;
    let delivery = deliver_resolved(&http(), "mail", &email_target(port), &message(), &fast(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        delivery,
        Delivery {
            channel: Channel::Email,
            attempts: 1
        }
    );
    let mails = lock(&sink.mails).clone();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "lockkeeper@example.com");
    assert_eq!(mail.to, ["ops@example.com", "dev@example.com"]);
    assert!(
        mail.data
            .contains("Subject: [Lockkeeper] prod/shop v1.4.2 (revision 7) was rolled back\r\n"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("To: ops@example.com, dev@example.com\r\n")
    );
    assert!(
        mail.data.contains("Rolled back to v1.4.1 on blue"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("    - Faster checkout\r\n"),
        "{}",
        mail.data
    );
    assert!(!mail.data.contains("shop.prod.svc"), "{}", mail.data);
}

#[tokio::test]
async fn a_busy_smtp_server_is_retried() {
    let (port, sink) = smtp_sink(Sink {
        busy_sessions: AtomicUsize::new(1),
        ..Sink::default()
    })
    .await;
    let delivery = deliver_resolved(&http(), "mail", &email_target(port), &message(), &fast(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(delivery.attempts, 2);
    assert_eq!(sink.sessions.load(Ordering::SeqCst), 2);
    assert_eq!(lock(&sink.mails).len(), 1);
}

#[tokio::test]
async fn a_refused_recipient_is_not_retried() {
    let (port, sink) = smtp_sink(Sink {
        refuse_recipients: true,
        ..Sink::default()
    })
    .await;
    let err = deliver_resolved(&http(), "mail", &email_target(port), &message(), &fast(3))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    assert_eq!(sink.sessions.load(Ordering::SeqCst), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("e-mail notification `mail` was refused: "),
        "{text}"
    );
    assert!(text.contains("no such user"), "{text}");
}

#[tokio::test]
async fn an_unreachable_smtp_server_fails_after_every_attempt() {
    let port = closed_port().await.port();
    let err = deliver_resolved(&http(), "mail", &email_target(port), &message(), &fast(3))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    assert_eq!(err.category(), "undelivered");
    let text = err.to_string();
    assert!(
        text.starts_with("e-mail notification `mail` not delivered after 3 attempts: "),
        "{text}"
    );
}

#[tokio::test]
async fn smtp_credentials_never_show_in_errors() {
    let port = closed_port().await.port();
    let Resolved::Email(mut target) = email_target(port) else {
        panic!("not e-mail");
    };
    target.smtp.login = Some(SmtpLogin {
        username: "bot".into(),
        password: SecretValue::new("hunter2"),
    });
    let resolved = Resolved::Email(target);
    let err = deliver_resolved(&http(), "mail", &resolved, &message(), &fast(1))
        .await
        .err()
        .unwrap_or_else(|| panic!("delivered"));
    let text = err.to_string();
    assert!(text.contains("not delivered after 1 attempt: "), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?} {resolved:?}").contains("hunter2"));
}
