//! Verification (runbook 3.1–3.3): which checks run in which phase, which
//! are due, how their measurements add up to a verdict (pure), and taking
//! the measurements (I/O, in `measure_due`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::{
    api::core::v1::{Pod, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};

use super::render;

use crate::{
    api::{
        Color, Release, SecretKeyRef,
        checks::{Check, CheckPhase, PodsCheck},
        release::StrategyType,
        status::{CheckResult, CheckStatus},
    },
    checks::{
        self,
        measure::{Limits, Measurement, Outcome, Tally},
        prometheus::{PrometheusServer, QueryError, QueryVars},
    },
    controller::validate::Validated,
    labels::{COLOR, RELEASE},
};

/// Time between measurements when a check names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The checks of `release` that run in `phase`. Recreate has no cutover, so
/// all its checks run once the new version is up (as `PreCutover`).
pub fn checks_for(spec: &crate::api::ReleaseSpec, phase: CheckPhase) -> Vec<&Check> {
    let recreate = spec.strategy.type_ == StrategyType::Recreate;
    spec.verify
        .iter()
        .filter(|c| {
            if recreate {
                phase == CheckPhase::PreCutover
            } else {
                c.when.is_empty() || c.when.contains(&phase)
            }
        })
        .collect()
}

fn entry<'a>(
    statuses: &'a [CheckStatus],
    name: &str,
    phase: CheckPhase,
) -> Option<&'a CheckStatus> {
    statuses.iter().find(|s| s.name == name && s.phase == phase)
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(t)
}

/// When `check` is next due in `phase`, or `None` once it is decided.
pub fn next_due(
    check: &Check,
    phase: CheckPhase,
    statuses: &[CheckStatus],
    since: Timestamp,
) -> Option<Timestamp> {
    let interval = check.interval.map_or(DEFAULT_INTERVAL, Into::into);
    match entry(statuses, &check.name, phase) {
        Some(s) if s.result.is_some() => None,
        Some(s) => Some(
            s.last_measured_at
                .as_ref()
                .map_or(since, |t| plus(t.0, interval)),
        ),
        None => Some(plus(
            since,
            check.initial_delay.map_or(Duration::ZERO, Into::into),
        )),
    }
}

/// The checks of `phase` due at `now`.
pub fn due<'a>(
    spec: &'a crate::api::ReleaseSpec,
    phase: CheckPhase,
    statuses: &[CheckStatus],
    since: Timestamp,
    now: Timestamp,
) -> Vec<&'a Check> {
    checks_for(spec, phase)
        .into_iter()
        .filter(|c| next_due(c, phase, statuses, since).is_some_and(|t| t <= now))
        .collect()
}

/// Adds a measurement to the check's status. A measurement that can never
/// pass on retry (a query Prometheus rejects) decides the check at once.
pub fn record(
    statuses: &mut Vec<CheckStatus>,
    check: &Check,
    phase: CheckPhase,
    m: &Measurement,
    final_failure: bool,
    now: Timestamp,
) {
    let index = match statuses
        .iter()
        .position(|s| s.name == check.name && s.phase == phase)
    {
        Some(i) => i,
        None => {
            statuses.push(fresh_status(check, phase));
            statuses.len() - 1
        }
    };
    let Some(status) = statuses.get_mut(index) else {
        return;
    };
    let mut tally = Tally::from_status(Limits::of(check), status);
    tally.record(m.outcome);
    tally.write_status(m, status);
    status.last_measured_at = Some(Time(now));
    if final_failure {
        status.result = Some(CheckResult::Failed);
    }
}

/// How the checks of a phase stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Every check passed (or there are none); a summary.
    Passed(String),
    /// A check failed; why, with the measured value.
    Failed(String),
    /// Still measuring; progress and when the next measurement is due.
    Running(String, Option<Timestamp>),
}

/// The verdict of `phase`'s checks.
pub fn standing(
    spec: &crate::api::ReleaseSpec,
    phase: CheckPhase,
    statuses: &[CheckStatus],
    since: Timestamp,
) -> Standing {
    let checks = checks_for(spec, phase);
    if checks.is_empty() {
        return Standing::Passed("no checks declared".into());
    }
    let mut progress = Vec::new();
    let mut next: Option<Timestamp> = None;
    let mut passed = 0;
    for check in &checks {
        let status = entry(statuses, &check.name, phase);
        match status.and_then(|s| s.result) {
            Some(CheckResult::Failed) => {
                let s = status
                    .cloned()
                    .unwrap_or_else(|| fresh_status(check, phase));
                let value = s
                    .last_value
                    .map(|v| format!(" (measured {v})"))
                    .unwrap_or_default();
                return Standing::Failed(format!(
                    "check {} failed{value}: {}",
                    check.name,
                    s.message.unwrap_or_default()
                ));
            }
            Some(CheckResult::Passed) => passed += 1,
            None => {
                let limits = Limits::of(check);
                let done = status.map_or(0, |s| s.passed);
                progress.push(format!("{} {done}/{} passed", check.name, limits.count));
                // A running Job check wakes the release through the Job watch.
                if check.job.is_none()
                    && let Some(t) = next_due(check, phase, statuses, since)
                {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
    }
    if progress.is_empty() {
        return Standing::Passed(format!("{passed}/{} checks passed", checks.len()));
    }
    Standing::Running(progress.join(", "), next)
}

/// A check's status before its first measurement.
fn fresh_status(check: &Check, phase: CheckPhase) -> CheckStatus {
    CheckStatus {
        name: check.name.clone(),
        phase,
        passed: 0,
        failed: 0,
        inconclusive: 0,
        last_value: None,
        last_measured_at: None,
        result: None,
        message: None,
    }
}

/// What a measurement needs to know about the revision.
pub struct Target<'a> {
    /// The Release.
    pub release: &'a Release,
    /// The color being verified.
    pub color: Color,
    /// The revision being verified.
    pub revision: i64,
    /// The phase the checks belong to.
    pub phase: CheckPhase,
    /// The decoded spec (Job check templates, the version's image).
    pub validated: &'a Validated,
    /// The check statuses so far (a Job check runs one Job per measurement).
    pub statuses: &'a [CheckStatus],
}

/// Takes one measurement of `check`; the bool is true when it can never
/// pass on retry.
pub async fn measure_now(
    client: &Client,
    http: &reqwest::Client,
    target: &Target<'_>,
    check: &Check,
) -> (Measurement, bool) {
    let release = target.release;
    let ns = release.namespace().unwrap_or_default();
    if let Some(h) = &check.http {
        let url = match service_url(target, h.url.as_deref(), h.port, h.path.as_deref()) {
            Ok(url) => url,
            Err(e) => return (Measurement::fail(None, e), true),
        };
        let mut headers = Vec::new();
        for header in &h.headers {
            let value = match (&header.value, &header.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(r)) => match secret_value(client, &ns, r).await {
                    Ok(v) => v,
                    Err(e) => return (Measurement::inconclusive(None, e), false),
                },
                (None, None) => String::new(),
            };
            headers.push((header.name.clone(), value));
        }
        return (checks::http::http(http, &url, h, &headers).await, false);
    }
    if let Some(l) = &check.load {
        return match service_url(target, l.url.as_deref(), l.port, l.path.as_deref()) {
            Ok(url) => (checks::load::load(http, &url, l).await, false),
            Err(e) => (Measurement::fail(None, e), true),
        };
    }
    if let Some(p) = &check.prometheus {
        let Some(endpoint) = p.address.as_ref().or(release.spec.prometheus.as_ref()) else {
            return (
                Measurement::fail(
                    None,
                    "no Prometheus address: set spec.prometheus or the check's address",
                ),
                true,
            );
        };
        let bearer_token = match &endpoint.bearer_token_secret_ref {
            Some(r) => match secret_value(client, &ns, r).await {
                Ok(v) => Some(v),
                Err(e) => return (Measurement::inconclusive(None, e), false),
            },
            None => None,
        };
        let condition = match checks::prometheus::compile_condition(&p.condition) {
            Ok(c) => c,
            Err(e) => return (Measurement::fail(None, e), true),
        };
        let server = PrometheusServer {
            address: endpoint.address.clone(),
            bearer_token,
        };
        let vars = QueryVars {
            app: release.name_any(),
            namespace: ns,
            color: target.color.as_str().to_owned(),
            version: release.spec.version.clone(),
            revision: target.revision,
        };
        let timeout = p.timeout.map_or(Duration::from_secs(10), Into::into);
        return match checks::prometheus::prometheus(
            http, &server, &p.query, &condition, &vars, timeout,
        )
        .await
        {
            Ok(m) => (m, false),
            Err(e @ (QueryError::InvalidQuery { .. } | QueryError::UnsupportedResult { .. })) => {
                (Measurement::fail(None, e.to_string()), true)
            }
            Err(e) => (Measurement::inconclusive(None, e.to_string()), false),
        };
    }
    if let Some(pods) = &check.pods {
        return (pod_stability(client, target, pods).await, false);
    }
    (
        Measurement::fail(None, "the check names no kind of measurement"),
        true,
    )
}

/// Takes one measurement of `check`, or `None` while a Job check's Job is
/// still running; the bool is true when the measurement can never pass on
/// retry.
pub async fn measure(
    client: &Client,
    http: &reqwest::Client,
    target: &Target<'_>,
    check: &Check,
) -> Option<(Measurement, bool)> {
    if check.job.is_some() {
        return job_check(client, target, check).await;
    }
    Some(measure_now(client, http, target, check).await)
}

/// A Job check: one Job per measurement, created if absent under a
/// deterministic name (so a restart never runs it twice), measured once it
/// has finished. `None` while it runs.
pub async fn job_check(
    client: &Client,
    target: &Target<'_>,
    check: &Check,
) -> Option<(Measurement, bool)> {
    let release = target.release;
    let ns = release.namespace().unwrap_or_default();
    let Some(template) = target.validated.check_jobs.get(&check.name) else {
        return Some((
            Measurement::fail(None, "the Job template could not be read"),
            true,
        ));
    };
    let taken = target
        .statuses
        .iter()
        .find(|s| s.name == check.name && s.phase == target.phase)
        .map_or(0, |s| s.passed + s.failed + s.inconclusive);
    let phase = match target.phase {
        CheckPhase::PreCutover => "pre",
        CheckPhase::PostCutover => "post",
    };
    let name = render::child_name(
        &release.name_any(),
        &format!("check-{}-{phase}-m{taken}", check.name),
        target.revision,
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let existing = match jobs.get_opt(&name).await {
        Ok(found) => found,
        Err(e) => {
            return Some((
                Measurement::inconclusive(None, format!("reading Job {ns}/{name}: {e}")),
                false,
            ));
        }
    };
    let Some(job) = existing else {
        let timeout = check
            .job
            .as_ref()
            .and_then(|j| j.timeout)
            .map_or(Duration::from_secs(300), Into::into);
        let job = render::job(
            release,
            &name,
            "check",
            template,
            &target.validated.image,
            target.revision,
            timeout,
        );
        return match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => None,
            Err(kube::Error::Api(status)) if status.code == 409 => None,
            Err(e) => Some((
                Measurement::fail(None, format!("creating Job {ns}/{name}: {e}")),
                true,
            )),
        };
    };
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return Some((
            Measurement::pass(Some("succeeded".into()), format!("Job {name} succeeded")),
            false,
        ));
    }
    if let Some(failed) = holds("Failed") {
        let why = failed
            .message
            .clone()
            .or_else(|| failed.reason.clone())
            .unwrap_or_default();
        return Some((
            Measurement::fail(Some("failed".into()), format!("Job {name} failed: {why}")),
            false,
        ));
    }
    None
}

/// The URL a Service-port check talks to: the check's own `url`, or the
/// preview Service before cutover and the active one after.
fn service_url(
    target: &Target<'_>,
    url: Option<&str>,
    port: Option<u16>,
    path: Option<&str>,
) -> Result<String, String> {
    if let Some(url) = url {
        return Ok(url.to_owned());
    }
    let strategy = &target.release.spec.strategy;
    let service = match (strategy.type_, target.phase) {
        (StrategyType::BlueGreen, CheckPhase::PreCutover) => strategy
            .blue_green
            .as_ref()
            .and_then(|b| b.preview_service.clone()),
        (StrategyType::BlueGreen, CheckPhase::PostCutover) => strategy
            .blue_green
            .as_ref()
            .map(|b| b.active_service.clone()),
        (StrategyType::Recreate, _) => strategy.recreate.as_ref().and_then(|r| r.service.clone()),
    }
    .ok_or_else(|| "no Service to reach the new color through: give the check a url".to_owned())?;
    let port = port.ok_or_else(|| "the check names neither url nor port".to_owned())?;
    let ns = target.release.namespace().unwrap_or_default();
    Ok(format!(
        "http://{service}.{ns}.svc:{port}{}",
        path.unwrap_or("/")
    ))
}

async fn secret_value(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(&reference.name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{}: {e}", reference.name))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .ok_or_else(|| {
            format!(
                "Secret {namespace}/{} has no key {:?}",
                reference.name, reference.key
            )
        })?;
    String::from_utf8(bytes.0.clone())
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            format!(
                "Secret {namespace}/{} key {:?} is not text",
                reference.name, reference.key
            )
        })
}

/// Container restarts and OOM kills across the new color's pods.
async fn pod_stability(client: &Client, target: &Target<'_>, check: &PodsCheck) -> Measurement {
    let ns = target.release.namespace().unwrap_or_default();
    let selector = format!(
        "{RELEASE}={},{COLOR}={}",
        target.release.name_any(),
        target.color.as_str()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list,
        Err(e) => return Measurement::inconclusive(None, format!("listing pods {selector}: {e}")),
    };
    let mut restarts = 0u32;
    let mut oom = Vec::new();
    for pod in &list.items {
        for cs in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            restarts = restarts.saturating_add(u32::try_from(cs.restart_count).unwrap_or(0));
            let killed = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.as_deref())
                == Some("OOMKilled");
            if killed {
                oom.push(format!("{}/{}", pod.name_any(), cs.name));
            }
        }
    }
    let value = Some(restarts.to_string());
    if check.fail_on_oom_kill && !oom.is_empty() {
        return Measurement::fail(value, format!("OOM-killed: {}", oom.join(", ")));
    }
    if restarts > check.max_restarts {
        return Measurement::fail(
            value,
            format!(
                "{restarts} container restarts across {} pods (at most {} allowed)",
                list.items.len(),
                check.max_restarts
            ),
        );
    }
    Measurement::pass(
        value,
        format!("{restarts} restarts across {} pods", list.items.len()),
    )
}

/// Whether an outcome counts against the check, for events.
pub fn is_failure(m: &Measurement) -> bool {
    m.outcome == Outcome::Fail
}
