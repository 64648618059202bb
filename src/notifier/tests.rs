//! The notifier's own unit tests: which events a notification wants and
//! which channel it names, and the message the renderers' tests start from.
//!
//! Delivery against real receivers (a webhook receiver failing on cue, an
//! SMTP sink) is tested through the public API in
//! `tests/integration/notify_delivery.rs`.

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
