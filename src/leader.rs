//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! replicas exactly one reconciles.
//!
//! Expiry is judged by when this replica last *saw the Lease change* on its
//! own monotonic clock (as client-go does), never by comparing the holder's
//! `renewTime` with the local wall clock, so clock skew between nodes cannot
//! make two replicas lead at once.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tracing::{debug, info, warn};

/// Timings and identity of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Checks the timings the way client-go does: a leader must give up
    /// (renew deadline) before its lease can expire for the others, and must
    /// try to renew more than once within the deadline.
    pub fn validate(&self) -> Result<(), String> {
        let (lease, renew, retry) = (self.lease_duration, self.renew_deadline, self.retry_period);
        if lease < Duration::from_secs(1) {
            return Err(format!(
                "--lease-duration {lease:?} is below the Lease API's 1s resolution"
            ));
        }
        if renew >= lease {
            return Err(format!(
                "--renew-deadline ({renew:?}) must be shorter than --lease-duration ({lease:?})"
            ));
        }
        if retry >= renew {
            return Err(format!(
                "--retry-period ({retry:?}) must be shorter than --renew-deadline ({renew:?})"
            ));
        }
        Ok(())
    }
}

/// Failures while talking to the Lease API.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Reading the Lease failed.
    #[error("reading Lease {namespace}/{name}: {source}")]
    Get {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// Writing the Lease failed for a reason other than losing a race.
    #[error("writing Lease {namespace}/{name}: {source}")]
    Write {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
}

/// Runs one replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Option<String>, Option<MicroTime>)>,
    observed_at: Instant,
}

impl LeaderElector {
    /// An elector for the Lease named in `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observed: None,
            observed_at: Instant::now(),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) {
        info!(lease = %self.config.name, identity = %self.config.identity, "waiting to lead");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease until renewal fails for longer than the renew
    /// deadline; returns then, when this replica must stop acting.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false)) => {
                    warn!(lease = %self.config.name, "another replica holds the lease");
                    return;
                }
                Ok(Err(error)) => warn!(%error, "renewing the lease failed"),
                Err(_) => warn!("renewing the lease timed out"),
            }
            if last_renewed.elapsed() > self.config.renew_deadline {
                warn!(lease = %self.config.name, "could not renew the lease within the renew deadline");
                return;
            }
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "released the lease"),
            Err(error) => warn!(%error, "releasing the lease failed"),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let (ns, name) = (self.config.namespace.clone(), self.config.name.clone());
        let now = MicroTime(Timestamp::now());
        // Lease durations are whole seconds; round up so the lease never
        // expires earlier than configured.
        let duration_secs = i32::try_from(self.config.lease_duration.as_millis().div_ceil(1000))
            .unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&name)
            .await
            .map_err(|source| LeaderError::Get {
                namespace: ns.clone(),
                name: name.clone(),
                source,
            })?;

        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(source) => Err(LeaderError::Write {
                    namespace: ns,
                    name,
                    source,
                }),
            };
        };

        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        if self.observed.as_ref() != Some(&record) {
            self.observed = Some(record);
            self.observed_at = Instant::now();
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(self.config.identity.as_str());
        let valid_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(0),
        );
        let expired = holder.is_none() || self.observed_at.elapsed() > valid_for;
        if !held_by_me && !expired {
            debug!(holder = ?holder, "lease held by another replica");
            return Ok(false);
        }
        if !held_by_me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        // replace carries the resourceVersion we read: a concurrent writer
        // makes this a 409 and we simply lost the race.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                let spec = written.spec.unwrap_or_default();
                self.observed = Some((spec.holder_identity, spec.renew_time));
                self.observed_at = Instant::now();
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Write {
                namespace: ns,
                name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease: u64, renew: u64, retry: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
        }
    }

    #[test]
    fn timings_must_be_ordered_and_whole_seconds_long() {
        assert!(config(15_000, 10_000, 2_000).validate().is_ok());
        assert!(
            config(500, 300, 100)
                .validate()
                .is_err_and(|e| e.contains("1s resolution"))
        );
        assert!(
            config(3_000, 3_000, 500)
                .validate()
                .is_err_and(|e| e.contains("renew-deadline"))
        );
        assert!(
            config(3_000, 2_000, 2_000)
                .validate()
                .is_err_and(|e| e.contains("retry-period"))
        );
    }
}
