//! Two operator replicas on one leader Lease: exactly one acts, the other
//! waits; when the leader dies (SIGKILL) or shuts down (SIGTERM) the standby
//! takes over. Takeover times are printed, never asserted.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::PostParams;
use lockkeeper::api::Release;
use serde_json::json;

use crate::api::{create_service, delete_releases};
use crate::support::{
    Operator, OperatorOptions, TestNamespace, assert_stays, events_about, install_crds, poll_until,
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(90);
const LEASE: &str = "lockkeeper-leader";
/// Short election timings so that a takeover after a crash takes seconds.
const LEASE_DURATION: Duration = Duration::from_secs(3);
const TIMINGS: [&str; 3] = [
    "--lease-duration=3s",
    "--renew-deadline=2s",
    "--retry-period=500ms",
];
const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Two replicas in one namespace, electing a leader on a Lease there.
struct Replicas {
    operators: Vec<Operator>,
    identities: [&'static str; 2],
    metrics: reqwest::Client,
}

impl Replicas {
    async fn start(ns: &TestNamespace) -> Replicas {
        let identities = ["replica-a", "replica-b"];
        let mut operators = Vec::new();
        for identity in identities {
            operators.push(
                Operator::start(OperatorOptions {
                    namespaces: vec![ns.name().to_owned()],
                    leader_lease: Some((ns.name().to_owned(), LEASE.to_owned())),
                    identity: Some(identity.to_owned()),
                    extra: TIMINGS.iter().map(|s| (*s).to_owned()).collect(),
                    ..OperatorOptions::default()
                })
                .await,
            );
        }
        let metrics = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("building an HTTP client");
        Replicas {
            operators,
            identities,
            metrics,
        }
    }

    /// The value of an unlabelled or labelled sample on a replica's /metrics;
    /// `None` when the sample is absent.
    async fn sample(&self, replica: usize, series: &str) -> Result<Option<f64>, String> {
        let url = format!("{}/metrics", self.operators[replica].metrics_url());
        let text = self
            .metrics
            .get(&url)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .map_err(|e| format!("GET {url}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix(series))
            .filter_map(|rest| rest.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok()))
    }

    async fn leader_gauge(&self, replica: usize) -> Result<f64, String> {
        self.sample(replica, "lockkeeper_leader")
            .await?
            .ok_or_else(|| {
                format!(
                    "replica {} exports no lockkeeper_leader",
                    self.identities[replica]
                )
            })
    }

    async fn reconciliations(&self, replica: usize) -> Result<f64, String> {
        Ok(self
            .sample(
                replica,
                "lockkeeper_reconciliations_total{kind=\"Release\"}",
            )
            .await?
            .unwrap_or(0.0))
    }

    /// Waits until the Lease names one replica and exactly that replica's
    /// gauge is 1; returns its index.
    async fn elected(&self, leases: &Api<Lease>) -> usize {
        poll_until(
            "one replica to lead and the other to stand by",
            TIMEOUT,
            || async {
                let holder = holder(leases).await?;
                let leader = self
                    .identities
                    .iter()
                    .position(|i| Some(*i) == holder.as_deref())
                    .ok_or_else(|| format!("the Lease is held by {holder:?}"))?;
                let gauges = [self.leader_gauge(0).await?, self.leader_gauge(1).await?];
                if gauges[leader] == 1.0 && gauges[1 - leader] == 0.0 {
                    Ok(leader)
                } else {
                    Err(format!(
                        "Lease held by {holder:?}; lockkeeper_leader: {} = {}, {} = {}",
                        self.identities[0], gauges[0], self.identities[1], gauges[1]
                    ))
                }
            },
        )
        .await
    }

    fn logs(&self) -> String {
        self.operators
            .iter()
            .zip(self.identities)
            .map(|(operator, identity)| format!("--- {identity} ---\n{}", operator.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn holder(leases: &Api<Lease>) -> Result<Option<String>, String> {
    let lease = leases
        .get_opt(LEASE)
        .await
        .map_err(|e| format!("reading Lease {LEASE}: {e}"))?
        .ok_or_else(|| format!("no Lease {LEASE} yet"))?;
    Ok(lease
        .spec
        .and_then(|spec| spec.holder_identity)
        .filter(|h| !h.is_empty()))
}

fn held_by(identity: &'static str) -> impl Fn(&Lease) -> bool {
    move |lease| {
        lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.as_deref())
            == Some(identity)
    }
}

/// Creates a valid Release steering its own Service.
async fn create_release(ns: &TestNamespace, name: &str) {
    create_service(ns, name).await;
    let release: Release = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "version": "v1.0.0",
            "workload": {
                "replicas": 1,
                "template": {"spec": {"containers": [{"name": "app", "image": IMAGE}]}},
            },
            "strategy": {"type": "BlueGreen", "blueGreen": {"activeService": name}},
        },
    }))
    .expect("a valid Release literal");
    ns.api::<Release>()
        .create(&PostParams::default(), &release)
        .await
        .unwrap_or_else(|e| panic!("creating Release {name}: {e}"));
}

fn has_status(release: &Release) -> bool {
    release.status.as_ref().is_some_and(|status| {
        status.observed_generation.is_some()
            && status.observed_generation == release.metadata.generation
            && !status.conditions.is_empty()
    })
}

/// Waits for the Events about Release `name` and checks that every one was
/// recorded by the replica `identity`.
async fn acted_as(ns: &TestNamespace, name: &str, identity: &str) {
    let events: Api<Event> = ns.api();
    let recorded = poll_until(&format!("Events about Release {name}"), TIMEOUT, || async {
        let recorded = events_about(&events, "Release", name).await?;
        if recorded.is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(recorded)
        }
    })
    .await;
    assert!(
        recorded.iter().all(|e| e.reporting_instance == identity),
        "Release {name} should have been handled by {identity} alone: {recorded:?}"
    );
}

/// Starts two replicas, checks that exactly one leads and acts while the
/// other idles, and returns them with the leader's index.
async fn two_replicas_one_leader(ns: &TestNamespace) -> (Replicas, usize) {
    let replicas = Replicas::start(ns).await;
    let leases: Api<Lease> = ns.api();
    let releases: Api<Release> = ns.api();
    let leader = replicas.elected(&leases).await;
    let standby = 1 - leader;
    eprintln!(
        "{} leads, {} stands by",
        replicas.identities[leader], replicas.identities[standby]
    );

    // The leader acts.
    create_release(ns, "before").await;
    wait_for(&releases, "before", TIMEOUT, has_status).await;
    acted_as(ns, "before", replicas.identities[leader]).await;

    // The leader keeps renewing and the standby does not take the Lease for
    // well over a lease duration, nor does it reconcile anything.
    assert_stays(
        &leases,
        LEASE,
        LEASE_DURATION * 2,
        held_by(replicas.identities[leader]),
    )
    .await;
    assert_eq!(
        replicas.leader_gauge(standby).await,
        Ok(0.0),
        "the standby's lockkeeper_leader"
    );
    assert_eq!(
        replicas.reconciliations(standby).await,
        Ok(0.0),
        "the standby reconciled Releases:\n{}",
        replicas.logs()
    );
    let reconciled = replicas.reconciliations(leader).await;
    assert!(
        reconciled.as_ref().is_ok_and(|n| *n > 0.0),
        "the leader's lockkeeper_reconciliations_total: {reconciled:?}"
    );
    (replicas, leader)
}

/// After the leader went away at `since`: waits until the standby holds the
/// Lease, reports leading and has reconciled `release`. Returns the times
/// to the Lease and to the Release's status.
async fn standby_takes_over(
    ns: &TestNamespace,
    replicas: &Replicas,
    standby: usize,
    since: Instant,
    release: &str,
) -> (Duration, Duration) {
    let leases: Api<Lease> = ns.api();
    let releases: Api<Release> = ns.api();
    wait_for(
        &leases,
        LEASE,
        TIMEOUT,
        held_by(replicas.identities[standby]),
    )
    .await;
    let to_lease = since.elapsed();
    wait_for(&releases, release, TIMEOUT, has_status).await;
    let to_status = since.elapsed();
    poll_until(
        "the new leader's lockkeeper_leader to be 1",
        TIMEOUT,
        || async {
            match replicas.leader_gauge(standby).await? {
                1.0 => Ok(()),
                other => Err(format!("lockkeeper_leader = {other}")),
            }
        },
    )
    .await;
    acted_as(ns, release, replicas.identities[standby]).await;
    (to_lease, to_status)
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    install_crds().await;
    let ns = TestNamespace::new("leader-kill").await;
    let (mut replicas, leader) = two_replicas_one_leader(&ns).await;
    let standby = 1 - leader;

    let killed_at = Instant::now();
    replicas.operators[leader].kill();
    create_release(&ns, "after").await;
    let (to_lease, to_status) =
        standby_takes_over(&ns, &replicas, standby, killed_at, "after").await;
    eprintln!(
        "leader {} killed (SIGKILL): {} held the Lease after {to_lease:?} and reconciled a new Release after {to_status:?} \
         (lease duration {LEASE_DURATION:?}, retry period 500ms)",
        replicas.identities[leader], replicas.identities[standby]
    );

    // The killed replica, started again, rejoins as the standby.
    replicas.operators[leader].restart();
    poll_until(
        "the restarted replica to serve /metrics",
        TIMEOUT,
        || async { replicas.leader_gauge(leader).await },
    )
    .await;
    let leases: Api<Lease> = ns.api();
    assert_stays(
        &leases,
        LEASE,
        LEASE_DURATION * 2,
        held_by(replicas.identities[standby]),
    )
    .await;
    assert_eq!(
        replicas.leader_gauge(leader).await,
        Ok(0.0),
        "the restarted replica's lockkeeper_leader"
    );
    assert!(
        replicas.operators[standby].is_running(),
        "the new leader exited:\n{}",
        replicas.logs()
    );
    delete_releases(&ns, TIMEOUT).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn standby_takes_over_at_once_when_the_leader_shuts_down() {
    install_crds().await;
    let ns = TestNamespace::new("leader-term").await;
    let (mut replicas, leader) = two_replicas_one_leader(&ns).await;
    let standby = 1 - leader;

    let terminated_at = Instant::now();
    replicas.operators[leader].terminate().await;
    let exited_after = terminated_at.elapsed();
    create_release(&ns, "after").await;
    let (to_lease, to_status) =
        standby_takes_over(&ns, &replicas, standby, terminated_at, "after").await;
    eprintln!(
        "leader {} terminated (SIGTERM, exited after {exited_after:?}): {} held the Lease after {to_lease:?} \
         and reconciled a new Release after {to_status:?} (lease duration {LEASE_DURATION:?}, retry period 500ms)",
        replicas.identities[leader], replicas.identities[standby]
    );
    // The Lease was handed back, not left to expire.
    let log = replicas.operators[leader].log();
    assert!(
        log.contains("released the lease"),
        "the terminated leader did not release the Lease:\n{log}"
    );
    assert!(
        replicas.operators[standby].is_running(),
        "the new leader exited:\n{}",
        replicas.logs()
    );
    delete_releases(&ns, TIMEOUT).await;
    ns.cleanup().await;
}
