//! Notifications end to end (runbook 4.2): the operator process posts to a
//! local webhook receiver (Slack, Teams, CloudEvents) and mails a local
//! SMTP server when revisions become Ready or are rolled back; a receiver
//! that is down or a Secret that is missing never holds a release up and
//! shows as a Warning event and a metric.

use std::time::Duration;

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::api::PostParams;
use lockkeeper::api::Phase;
use serde_json::{Value, json};

use crate::{
    runbook::{LONG, apply, blue_green, release, setup, wait_phase},
    support::{
        BEHAVIOR_LABEL, NEVER_READY, SmtpSink, TestNamespace, WebhookReceiver, events_about,
        poll_until,
    },
};

async fn secret(ns: &TestNamespace, name: &str, data: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": data
    }))
    .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"));
}

/// A webhook receiver and an SMTP sink, and the Secrets (`hooks`, `smtp`)
/// that point the Release's channels at them.
async fn receivers(ns: &TestNamespace) -> (WebhookReceiver, SmtpSink) {
    let receiver = WebhookReceiver::start().await;
    let smtp = SmtpSink::start().await;
    secret(
        ns,
        "hooks",
        json!({"slack": receiver.url("/slack"), "teams": receiver.url("/teams"), "events": receiver.url("/events")}),
    )
    .await;
    secret(
        ns,
        "smtp",
        json!({"host": "127.0.0.1", "port": smtp.port().to_string(), "tls": "none", "from": "lockkeeper@example.com"}),
    )
    .await;
    (receiver, smtp)
}

fn notify(extra: Value) -> Value {
    let mut channels = vec![
        json!({"name": "chat", "slack": {"webhookSecretRef": {"name": "hooks", "key": "slack"}}}),
        json!({"name": "teams", "teams": {"webhookSecretRef": {"name": "hooks", "key": "teams"}}}),
        json!({"name": "events", "webhook": {"webhookSecretRef": {"name": "hooks", "key": "events"}}}),
        json!({"name": "mail", "email": {"to": ["ops@example.com"], "smtpSecretRef": {"name": "smtp"}}}),
    ];
    if let Value::Array(more) = extra {
        channels.extend(more);
    }
    json!({"notify": channels, "changes": {"features": ["Faster checkout"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_rolled_back_releases_are_announced_on_every_channel() {
    let (ns, operator, api) = setup("notify").await;
    let (receiver, smtp) = receivers(&ns).await;

    // v1 goes Ready: three webhooks and one mail.
    apply(&api, &release("v1", blue_green("0s"), notify(json!([])))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    let requests = receiver.wait_for_requests(3, LONG).await;
    let mails = smtp.wait_for_mails(1, LONG).await;
    let by_path = |path: &str| {
        receiver
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect::<Vec<_>>()
    };
    let slack = by_path("/slack");
    let text = slack[0].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("slack: {text}");
    assert!(text.contains("v1") && text.contains("revision 1"), "{text}");
    assert!(slack[0].text().contains("Faster checkout"));
    let teams = by_path("/teams");
    assert_eq!(
        teams[0].json()["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let events = by_path("/events");
    let event = events[0].json();
    println!("cloudevent: {event}");
    assert_eq!(
        events[0].header("content-type"),
        Some("application/cloudevents+json")
    );
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "dev.lockkeeper.release.ready");
    assert_eq!(
        event["source"],
        format!(
            "/apis/lockkeeper.dev/v1alpha1/namespaces/{}/releases/shop",
            ns.name()
        )
    );
    let subject = mails[0].subject();
    println!("mail: {subject} to {:?}", mails[0].to);
    assert!(
        subject.contains("shop") && subject.contains("v1"),
        "{subject}"
    );
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert_eq!(requests.len(), 3, "one request per webhook channel");

    // v2 never gets ready and rolls back: the same channels say so.
    let mut bad = notify(json!([]));
    bad["workload"] = json!({"progressDeadline": "2s", "template": {"metadata": {"labels": {"app": "shop", BEHAVIOR_LABEL: NEVER_READY}}}});
    apply(&api, &release("v2", blue_green("0s"), bad)).await;
    wait_phase(&api, 2, Phase::RolledBack, LONG).await;
    receiver.wait_for_requests(6, LONG).await;
    let mails = smtp.wait_for_mails(2, LONG).await;
    let rolled_back = by_path("/events")
        .into_iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "dev.lockkeeper.release.rolledback")
        .unwrap_or_else(|| panic!("no rolledback CloudEvent"));
    println!("rolled back: {}", rolled_back["data"]);
    assert_eq!(rolled_back["subject"], "revisions/2");
    let slack = by_path("/slack");
    let last = slack.last().map(|r| r.text()).unwrap_or_default();
    assert!(last.contains("rolled back"), "{last}");
    assert!(
        mails[1].body().contains("did not become available in time"),
        "{}",
        mails[1].body()
    );

    // Nothing secret was ever written where people look.
    let notes = events_about(&ns.api::<Event>(), "Release", "shop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(notes.iter().all(|e| !e.note.contains(&receiver.url(""))));
    let metrics = reqwest::get(format!("{}/metrics", operator.metrics_url()))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let delivered: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lockkeeper_notifications_total") && l.contains("delivered"))
        .collect();
    println!("{delivered:#?}");
    assert!(!delivered.is_empty());
    ns.cleanup().await;
}

/// A receiver that is down and a Secret that does not exist: the release
/// still ends Ready; each failure is a Warning event naming the channel
/// (never its URL) and a metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_notifications_never_hold_a_release_up() {
    let (ns, operator, api) = setup("notifyfail").await;
    let (receiver, smtp) = receivers(&ns).await;
    receiver.stop().await;
    smtp.stop().await;
    let missing = json!([
        {"name": "pager", "webhook": {"webhookSecretRef": {"name": "no-such-secret", "key": "url"}}},
        {"name": "nokey", "slack": {"webhookSecretRef": {"name": "hooks", "key": "no-such-key"}}},
    ]);
    let started = std::time::Instant::now();
    apply(&api, &release("v1", blue_green("0s"), notify(missing))).await;
    wait_phase(&api, 1, Phase::Ready, LONG).await;
    println!(
        "Ready in {:.2}s with every receiver down",
        started.elapsed().as_secs_f64()
    );
    let failures = poll_until(
        "six NotificationFailed events",
        Duration::from_secs(120),
        || async {
            let events = events_about(&ns.api::<Event>(), "Release", "shop").await?;
            let failed: Vec<String> = events
                .into_iter()
                .filter(|e| e.reason == "NotificationFailed" && e.type_ == "Warning")
                .map(|e| e.note)
                .collect();
            if failed.len() >= 6 {
                Ok(failed)
            } else {
                Err(format!("{failed:#?}"))
            }
        },
    )
    .await;
    println!("{failures:#?}");
    for (name, expected) in [
        ("pager", "no-such-secret"),
        ("nokey", "no-such-key"),
        ("chat", "chat"),
        ("mail", "mail"),
    ] {
        assert!(
            failures
                .iter()
                .any(|f| f.contains(&format!("{name:?}")) && f.contains(expected)),
            "{name}: {failures:#?}"
        );
    }
    let url = receiver.url("");
    assert!(
        failures.iter().all(|f| !f.contains(&url)),
        "a URL leaked: {failures:#?}"
    );
    let metrics = reqwest::get(format!("{}/metrics", operator.metrics_url()))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let failed: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("lockkeeper_notifications_total") && l.contains("result=\"failed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("lockkeeper_notifications_total{{result=\"failed\"}} = {failed}");
    assert!(failed >= 6.0, "{failed}");
    ns.cleanup().await;
}
