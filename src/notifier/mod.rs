//! Notify (runbook 4.2): tells people what a release did, over Slack,
//! Microsoft Teams, a CloudEvents webhook or e-mail.
//!
//! The work is split so that only one thin function needs a cluster:
//!
//! * [`Message`] says what happened; the renderers ([`slack`], [`teams`],
//!   [`cloudevents`], [`email`]) turn it into what each channel takes. They
//!   are pure.
//! * [`secrets::resolve`] reads the Secrets a [`Notification`] names into a
//!   [`Resolved`] channel: a webhook URL or SMTP settings.
//! * [`deliver_resolved`] sends a message to a resolved channel, retrying
//!   what may succeed later ([`RetryPolicy`]).
//!
//! Webhook URLs and SMTP passwords are credentials: no error, log line or
//! `Debug` output here contains them.
//!
//! Deciding *whether* to notify is the caller's: [`wants`] says if a
//! notification asked for an event, and a delivery is attempted once per
//! event. Retries of one event carry the same CloudEvents `id` and e-mail
//! `Message-ID`, so a receiver can drop duplicates.

pub mod cloudevents;
pub mod email;
mod error;
mod retry;
pub mod secrets;
pub mod slack;
pub mod teams;
mod text;

pub use text::kind_name;
mod webhook;

#[cfg(test)]
mod tests;

use std::fmt;

pub use error::NotifyError;
pub use retry::RetryPolicy;
pub use secrets::{
    EmailTarget, Resolved, SecretValue, SmtpLogin, SmtpSettings, SmtpTls, WebhookUrl,
};

use crate::api::{
    notify::{Notification, NotifyOn},
    release::Changes,
};

/// What happened to a release, as a notification tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The Release's uid, when known: it tells apart two Releases that had
    /// the same name at different times in CloudEvents ids.
    pub uid: Option<String>,
    /// The revision the event is about.
    pub revision: i64,
    /// The version that revision ships.
    pub version: String,
    /// What happened.
    pub kind: NotifyOn,
    /// One line saying what happened, e.g. "Serving v1.4.2 on green".
    pub summary: String,
    /// Why, when it is not obvious from `kind`, e.g. the failed check.
    pub reason: Option<String>,
    /// What the revision changes, from the Release's `changes`.
    pub changes: Changes,
    /// When it happened.
    pub time: jiff::Timestamp,
    /// How the runbook's steps went, in order. URLs in the messages are
    /// replaced by `<url>` when rendered.
    pub details: Vec<Detail>,
}

/// How one runbook step went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detail {
    /// The step, e.g. `preflight` or `verify/http-health`.
    pub step: String,
    /// Its state, e.g. `Succeeded`.
    pub state: String,
    /// What it said.
    pub message: String,
}

/// The kinds of channel a [`Notification`] can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams incoming webhook.
    Teams,
    /// A generic webhook receiving CloudEvents.
    Webhook,
    /// E-mail over SMTP.
    Email,
}

impl Channel {
    /// The channel a notification names; the API admits exactly one, and the
    /// first set in the order Slack, Teams, webhook, e-mail wins otherwise.
    pub fn of(notification: &Notification) -> Option<Channel> {
        if notification.slack.is_some() {
            Some(Channel::Slack)
        } else if notification.teams.is_some() {
            Some(Channel::Teams)
        } else if notification.webhook.is_some() {
            Some(Channel::Webhook)
        } else if notification.email.is_some() {
            Some(Channel::Email)
        } else {
            None
        }
    }

    /// A stable lower-case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Slack => "slack",
            Channel::Teams => "teams",
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Slack => "Slack",
            Channel::Teams => "Teams",
            Channel::Webhook => "webhook",
            Channel::Email => "e-mail",
        })
    }
}

/// The events a notification with an empty `on` is sent for: the ones that
/// need a person (approval) or end a revision.
pub const DEFAULT_ON: [NotifyOn; 4] = [
    NotifyOn::AwaitingApproval,
    NotifyOn::Ready,
    NotifyOn::RolledBack,
    NotifyOn::Failed,
];

/// Whether `notification` asked to be told about `kind`.
pub fn wants(notification: &Notification, kind: NotifyOn) -> bool {
    if notification.on.is_empty() {
        DEFAULT_ON.contains(&kind)
    } else {
        notification.on.contains(&kind)
    }
}

/// A message that reached its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Where it went.
    pub channel: Channel,
    /// How many attempts it took, from 1.
    pub attempts: u32,
}

/// Reads the Secrets `notification` names in `namespace` and sends
/// `message` to its channel with the default [`RetryPolicy`].
///
/// Retries take their time (seven seconds of back-off by default, plus each
/// attempt's timeout): call it off the reconcile path, or with a shorter
/// policy through [`deliver_with`].
pub async fn deliver(
    client: &kube::Client,
    http: &reqwest::Client,
    namespace: &str,
    notification: &Notification,
    message: &Message,
) -> Result<Delivery, NotifyError> {
    deliver_with(
        client,
        http,
        namespace,
        notification,
        message,
        &RetryPolicy::default(),
    )
    .await
}

/// [`deliver`] with a given retry policy. Reading the Secrets is not
/// retried: a missing Secret or key needs a person, and the caller's own
/// back-off covers an API server that is briefly away.
pub async fn deliver_with(
    client: &kube::Client,
    http: &reqwest::Client,
    namespace: &str,
    notification: &Notification,
    message: &Message,
    policy: &RetryPolicy,
) -> Result<Delivery, NotifyError> {
    let resolved = secrets::resolve(client, namespace, notification).await?;
    deliver_resolved(http, &notification.name, &resolved, message, policy).await
}

/// Sends `message` to an already resolved channel of the notification named
/// `notification`, retrying connection failures, timeouts, HTTP 408, 429 and
/// 5xx, and SMTP 4xx replies, with exponential back-off.
pub async fn deliver_resolved(
    http: &reqwest::Client,
    notification: &str,
    resolved: &Resolved,
    message: &Message,
    policy: &RetryPolicy,
) -> Result<Delivery, NotifyError> {
    let channel = resolved.channel();
    let (url, body, content_type) = match resolved {
        Resolved::Slack { url } => (url, slack::render(message), webhook::JSON),
        Resolved::Teams { url } => (url, teams::render(message), webhook::JSON),
        Resolved::Webhook { url } => (url, cloudevents::render(message), cloudevents::CONTENT_TYPE),
        Resolved::Email(target) => {
            return deliver_email(notification, target, message, policy).await;
        }
    };
    let post = webhook::Post::new(url, body.to_string(), content_type, policy.attempt_timeout);
    retry::with_retries(policy, notification, channel, |_| post.send(http))
        .await
        .map(|((), attempts)| Delivery { channel, attempts })
        .map_err(|gave_up| gave_up.into_error(notification, channel))
}

/// [`deliver_resolved`] for e-mail.
async fn deliver_email(
    notification: &str,
    target: &EmailTarget,
    message: &Message,
    policy: &RetryPolicy,
) -> Result<Delivery, NotifyError> {
    let channel = Channel::Email;
    let composed = email::compose(message, target).map_err(|reason| NotifyError::Compose {
        notification: notification.to_owned(),
        reason,
    })?;
    let transport = email::transport(&target.smtp, policy.attempt_timeout).map_err(|reason| {
        NotifyError::Rejected {
            notification: notification.to_owned(),
            channel,
            reason,
        }
    })?;
    retry::with_retries(policy, notification, channel, |_| {
        email::send(&transport, &composed, policy.attempt_timeout)
    })
    .await
    .map(|((), attempts)| Delivery { channel, attempts })
    .map_err(|gave_up| gave_up.into_error(notification, channel))
}
