//! Notifications (runbook 4.2), sent off the reconcile path: a slow or
//! failing receiver never delays or fails a release. A failure is visible
//! as a Warning event naming the channel and as a metric; URLs and
//! credentials never appear in either.

use jiff::Timestamp;
use kube::{
    Client, Resource, ResourceExt,
    runtime::events::{Event, EventType, Recorder},
};
use tracing::{info, warn};

use crate::{
    api::{Release, notify::NotifyOn},
    metrics::Metrics,
    notifier::{self, Channel, Detail, Message},
};

/// What a notification needs, cloned out of the shared context.
#[derive(Clone)]
pub struct Dispatcher {
    /// The API client (Secrets, events).
    pub client: Client,
    /// The HTTP client webhooks are posted with.
    pub http: reqwest::Client,
    /// The event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
}

impl Dispatcher {
    /// Sends every notification of `release` that wants one of `kinds`,
    /// each in its own task.
    pub fn send(&self, release: &Release, kinds: &[NotifyOn], now: Timestamp) {
        for kind in kinds {
            let message = message(release, *kind, now);
            for notification in release
                .spec
                .notify
                .iter()
                .filter(|n| notifier::wants(n, *kind))
            {
                let this = self.clone();
                let notification = notification.clone();
                let message = message.clone();
                let namespace = release.namespace().unwrap_or_default();
                let reference = release.object_ref(&());
                tokio::spawn(async move {
                    let channel = Channel::of(&notification).map_or("none", Channel::as_str);
                    let event = notifier::kind_name(message.kind);
                    let result = notifier::deliver(
                        &this.client,
                        &this.http,
                        &namespace,
                        &notification,
                        &message,
                    )
                    .await;
                    match result {
                        Ok(delivery) => {
                            info!(notification = %notification.name, channel, event, attempts = delivery.attempts, "notification delivered");
                            this.metrics
                                .notifications
                                .with_label_values(&[channel, event, "delivered"])
                                .inc();
                        }
                        Err(error) => {
                            warn!(notification = %notification.name, channel, event, %error, "notification failed");
                            this.metrics
                                .notifications
                                .with_label_values(&[channel, event, "failed"])
                                .inc();
                            let note = format!(
                                "notification {:?} ({channel}) of {event} for revision {} failed: {error}",
                                notification.name, message.revision
                            );
                            let published = this
                                .recorder
                                .publish(
                                    &Event {
                                        type_: EventType::Warning,
                                        reason: "NotificationFailed".into(),
                                        note: Some(note),
                                        action: format!(
                                            "Notify{}",
                                            notification.name.replace('-', "")
                                        ),
                                        secondary: None,
                                    },
                                    &reference,
                                )
                                .await;
                            if let Err(error) = published {
                                warn!(%error, "publishing an event failed");
                            }
                        }
                    }
                });
            }
        }
    }
}

/// The message for `kind` of the release's current revision.
pub fn message(release: &Release, kind: NotifyOn, now: Timestamp) -> Message {
    let status = release.status.clone().unwrap_or_default();
    let revision = status.revision.unwrap_or_default();
    let version = status
        .version
        .clone()
        .unwrap_or_else(|| release.spec.version.clone());
    let color = status.active_color.map_or("-", |c| c.as_str());
    let failure = status.failure.clone();
    let summary = match kind {
        NotifyOn::Started => format!("revision {revision} ({version}) started"),
        NotifyOn::AwaitingApproval => {
            format!("revision {revision} ({version}) waits for approval")
        }
        NotifyOn::Waiting => format!("revision {revision} ({version}) is waiting"),
        NotifyOn::Ready => format!("revision {revision} ({version}) is serving on {color}"),
        NotifyOn::RolledBack => format!(
            "revision {revision} ({version}) was rolled back; {color} serves revision {}",
            status.stable_revision.unwrap_or_default()
        ),
        NotifyOn::Failed => format!("revision {revision} ({version}) failed"),
    };
    Message {
        namespace: release.namespace().unwrap_or_default(),
        release: release.name_any(),
        uid: release.uid(),
        revision,
        version,
        kind,
        summary,
        reason: matches!(kind, NotifyOn::RolledBack | NotifyOn::Failed)
            .then_some(failure)
            .flatten(),
        changes: release.spec.changes.clone(),
        time: now,
        details: status
            .steps
            .iter()
            .filter(|s| s.started_at.is_some())
            .map(|s| Detail {
                step: s.name.clone(),
                state: format!("{:?}", s.state),
                message: s.message.clone().unwrap_or_default(),
            })
            .collect(),
    }
}
