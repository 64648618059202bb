//! Why a notification was not delivered. No variant holds a secret value:
//! Secrets are named by namespace, name and key, never quoted.

use super::Channel;

/// A notification could not be delivered; one variant per operation.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The notification names no channel (the API's validation forbids it).
    #[error("notification `{notification}` sets none of slack, teams, webhook or email")]
    NoChannel {
        /// The notification.
        notification: String,
    },
    /// A Secret that is referenced does not exist.
    #[error("Secret {namespace}/{name} of notification `{notification}` does not exist")]
    MissingSecret {
        /// The notification.
        notification: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// Reading a Secret failed.
    #[error("reading Secret {namespace}/{name} for notification `{notification}`: {source}")]
    ReadSecret {
        /// The notification.
        notification: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// Cause, boxed: a kube error is large and this is the rare path.
        source: Box<kube::Error>,
    },
    /// A Secret lacks a key that is needed.
    #[error("Secret {namespace}/{name} has no key `{key}`")]
    MissingKey {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key.
        key: String,
    },
    /// A Secret's key holds something unusable. The value is not quoted.
    #[error("Secret {namespace}/{name} key `{key}` {problem}")]
    InvalidKey {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key.
        key: String,
        /// What is wrong with it, e.g. "is not an http(s) URL".
        problem: &'static str,
    },
    /// An e-mail notification has no sender.
    #[error(
        "e-mail notification `{notification}` has no sender: set its `from` or key `from` in Secret {namespace}/{name}"
    )]
    NoSender {
        /// The notification.
        notification: String,
        /// The SMTP Secret's namespace.
        namespace: String,
        /// The SMTP Secret's name.
        name: String,
    },
    /// The e-mail could not be put together, e.g. an address is not valid.
    #[error("composing the e-mail of notification `{notification}`: {reason}")]
    Compose {
        /// The notification.
        notification: String,
        /// Why.
        reason: String,
    },
    /// The channel refused the message in a way retrying will not change
    /// (HTTP 4xx, SMTP 5xx, a TLS setup that cannot work).
    #[error("{channel} notification `{notification}` was refused: {reason}")]
    Rejected {
        /// The notification.
        notification: String,
        /// The channel.
        channel: Channel,
        /// Why, without URLs.
        reason: String,
    },
    /// Every attempt failed with an error that might have passed.
    #[error(
        "{channel} notification `{notification}` not delivered after {}: {reason}",
        attempts_text(.attempts)
    )]
    Undelivered {
        /// The notification.
        notification: String,
        /// The channel.
        channel: Channel,
        /// How many attempts were made.
        attempts: u32,
        /// Why the last one failed, without URLs.
        reason: String,
    },
}

fn attempts_text(attempts: &u32) -> String {
    match attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    }
}

impl NotifyError {
    /// A stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            NotifyError::NoChannel { .. } => "no_channel",
            NotifyError::MissingSecret { .. } => "missing_secret",
            NotifyError::ReadSecret { .. } => "read_secret",
            NotifyError::MissingKey { .. } => "missing_key",
            NotifyError::InvalidKey { .. } => "invalid_key",
            NotifyError::NoSender { .. } => "no_sender",
            NotifyError::Compose { .. } => "compose",
            NotifyError::Rejected { .. } => "rejected",
            NotifyError::Undelivered { .. } => "undelivered",
        }
    }

    /// Whether a later delivery of the same message may succeed without a
    /// person changing anything: the channel was unreachable or busy, or the
    /// API server did not answer.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Undelivered { .. } => true,
            NotifyError::ReadSecret { source, .. } => !matches!(
                source.as_ref(),
                kube::Error::Api(status) if status.is_not_found() || status.code == 403
            ),
            _ => false,
        }
    }
}
