//! Runbook 4.3's cleanup of temporaries: finished Jobs removed after a
//! TTL, and revision records beyond the history removed — never what the
//! running revision or the rollback target needs. Backups and per-revision
//! config are pruned by the runbook's Complete step (their `keep`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::{apps::v1::ControllerRevision, batch::v1::Job};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PropagationPolicy},
};

use crate::{
    api::{Release, ReleaseStatus},
    labels::{JOB, RELEASE, REVISION, ROLE},
    runbook::render,
};

/// What a tidy-up did, and when the next one is due.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Jobs deleted.
    pub jobs: Vec<String>,
    /// Revision records deleted.
    pub records: Vec<String>,
    /// When the next finished Job's TTL runs out.
    pub next: Option<Duration>,
}

/// Deleting a temporary failed.
#[derive(Debug, thiserror::Error)]
#[error("cleaning up {kind} of Release {namespace}/{release}: {source}")]
pub struct TidyError {
    /// What was being cleaned up.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Release.
    pub release: String,
    /// Cause.
    pub source: kube::Error,
}

/// When a Job finished, if it has.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    let done = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    status
        .completion_time
        .as_ref()
        .or(done.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// The revision records to keep: those of the revisions in the history,
/// the running one and the rollback target.
pub fn records_to_keep(status: &ReleaseStatus) -> Vec<i64> {
    let mut keep: Vec<i64> = status.history.iter().map(|h| h.revision).collect();
    keep.extend(status.revision);
    keep.extend(status.stable_revision);
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// Deletes finished Jobs older than `ttl` (of earlier revisions, or of the
/// current one once it has ended) and records outside [`records_to_keep`].
pub async fn tidy(
    client: &Client,
    release: &Release,
    status: &ReleaseStatus,
    ttl: Duration,
    now: Timestamp,
) -> Result<Tidied, TidyError> {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let err = |kind: &'static str| {
        let (namespace, release) = (namespace.clone(), name.clone());
        move |source| TidyError {
            kind,
            namespace,
            release,
            source,
        }
    };
    let mut tidied = Tidied::default();
    let ended = status.phase.is_some_and(crate::api::Phase::is_terminal);
    let current = status.revision.unwrap_or_default();

    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let list = jobs
        .list(&ListParams::default().labels(&format!("{RELEASE}={name}")))
        .await
        .map_err(err("Jobs"))?;
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for job in list.items {
        let revision: i64 = job
            .labels()
            .get(REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or_default();
        if revision >= current && !ended {
            continue;
        }
        // A migration Job stays while its step may still look for it.
        if job.labels().get(JOB).is_some_and(|j| j == "migrate") && revision == current && !ended {
            continue;
        }
        let Some(finished) = finished_at(&job) else {
            continue;
        };
        let due = finished.checked_add(ttl).unwrap_or(finished);
        if now >= due {
            let job_name = job.name_any();
            match jobs.delete(&job_name, &background).await {
                Ok(_) => tidied.jobs.push(job_name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(err("Jobs")(e)),
            }
        } else {
            let left = due.duration_since(now).unsigned_abs();
            tidied.next = Some(tidied.next.map_or(left, |n| n.min(left)));
        }
    }

    let records: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let list = records
        .list_metadata(&ListParams::default().labels(&format!("{RELEASE}={name},{ROLE}=revision")))
        .await
        .map_err(err("ControllerRevisions"))?;
    let keep = records_to_keep(status);
    for record in list.items {
        let revision: Option<i64> = record.labels().get(REVISION).and_then(|r| r.parse().ok());
        let Some(revision) = revision else { continue };
        if keep.contains(&revision) || record.name_any() != render::record_name(&name, revision) {
            continue;
        }
        match records
            .delete(&record.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => tidied.records.push(record.name_any()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(err("ControllerRevisions")(e)),
        }
    }
    Ok(tidied)
}
