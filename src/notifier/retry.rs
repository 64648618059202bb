//! Attempts a delivery again while the failure may pass, waiting longer
//! each time.

use std::{future::Future, time::Duration};

use super::{Channel, NotifyError};

/// How often and how patiently a delivery is attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 0 counts as 1.
    pub attempts: u32,
    /// The wait before the second attempt; each later wait doubles it.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, also the most a receiver's
    /// `Retry-After` can ask for.
    pub max_backoff: Duration,
    /// How long one attempt (connect, send, answer) may take.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, 1s, 2s and 4s apart (at most 8s), 10s each.
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1): the initial back-off
    /// doubled per earlier failure, or what the receiver asked for if longer,
    /// capped at `max_backoff`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let exponential = self
            .initial_backoff
            .saturating_mul(1_u32 << doublings)
            .min(self.max_backoff);
        retry_after
            .map_or(exponential, |asked| asked.max(exponential))
            .min(self.max_backoff)
    }
}

/// Why one attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It may pass: no connection, a timeout, a busy or broken receiver.
    Transient {
        /// Why, without URLs or credentials.
        reason: String,
        /// How long the receiver asked to wait, if it did.
        retry_after: Option<Duration>,
    },
    /// Trying again will not help.
    Permanent(String),
}

impl Failure {
    /// A transient failure without a requested wait.
    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// The last failure once attempts stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GaveUp {
    /// Attempts made.
    pub attempts: u32,
    /// Whether the last failure was permanent.
    pub permanent: bool,
    /// Why the last attempt failed.
    pub reason: String,
}

impl GaveUp {
    /// The error for the notification's caller.
    pub(crate) fn into_error(self, notification: &str, channel: Channel) -> NotifyError {
        if self.permanent {
            NotifyError::Rejected {
                notification: notification.to_owned(),
                channel,
                reason: self.reason,
            }
        } else {
            NotifyError::Undelivered {
                notification: notification.to_owned(),
                channel,
                attempts: self.attempts,
                reason: self.reason,
            }
        }
    }
}

/// Runs `attempt` (given its number, from 1) until it succeeds, fails
/// permanently, or `policy.attempts` are used up, sleeping between attempts.
/// Returns the value and the number of attempts made.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    notification: &str,
    channel: Channel,
    mut attempt: F,
) -> Result<(T, u32), GaveUp>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let attempts = policy.attempts.max(1);
    let mut number = 1;
    loop {
        match attempt(number).await {
            Ok(value) => return Ok((value, number)),
            Err(Failure::Permanent(reason)) => {
                return Err(GaveUp {
                    attempts: number,
                    permanent: true,
                    reason,
                });
            }
            Err(Failure::Transient { reason, .. }) if number >= attempts => {
                return Err(GaveUp {
                    attempts: number,
                    permanent: false,
                    reason,
                });
            }
            Err(Failure::Transient {
                reason,
                retry_after,
            }) => {
                let wait = policy.backoff(number, retry_after);
                tracing::debug!(
                    notification,
                    channel = channel.as_str(),
                    attempt = number,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    %reason,
                    "notification attempt failed; retrying"
                );
                tokio::time::sleep(wait).await;
                number += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            attempt_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=6).map(|n| p.backoff(n, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
        assert_eq!(p.backoff(u32::MAX, None), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_lengthens_but_never_past_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.backoff(3, Some(Duration::from_secs(1))),
            Duration::from_secs(4)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(600))),
            Duration::from_secs(8)
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let result = with_retries(&policy(4), "ops", Channel::Slack, |n| async move {
            if n < 3 {
                Err(Failure::transient(format!("down {n}")))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(result, Ok((3, 3)));
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let result: Result<((), u32), GaveUp> =
            with_retries(&policy(3), "ops", Channel::Slack, |n| async move {
                Err(Failure::transient(format!("down {n}")))
            })
            .await;
        assert_eq!(
            result,
            Err(GaveUp {
                attempts: 3,
                permanent: false,
                reason: "down 3".into()
            })
        );
    }

    #[tokio::test]
    async fn permanent_failures_stop_at_once() {
        let result: Result<((), u32), GaveUp> =
            with_retries(&policy(4), "ops", Channel::Slack, |_| async {
                Err(Failure::Permanent("no".into()))
            })
            .await;
        assert_eq!(
            result,
            Err(GaveUp {
                attempts: 1,
                permanent: true,
                reason: "no".into()
            })
        );
    }

    #[tokio::test]
    async fn zero_attempts_still_tries_once() {
        let result = with_retries(&policy(0), "ops", Channel::Email, |n| async move {
            Ok::<_, Failure>(n)
        })
        .await;
        assert_eq!(result, Ok((1, 1)));
    }
}
