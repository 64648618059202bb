//! What a status write means for people and dashboards: which
//! notifications to send, which steps finished, how a revision ended, and
//! the human-readable deployment log (runbook 4.1, 4.2). Pure.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::{
    api::{
        Phase, ReleaseStatus,
        notify::NotifyOn,
        status::{HistoryEntry, StepState},
    },
    runbook::steps::{self, Step},
};

/// A step that finished in this write.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedStep {
    /// The step's name.
    pub name: String,
    /// How it ended.
    pub state: StepState,
    /// How long it took.
    pub seconds: f64,
}

/// How a revision ended, for the delivery metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    /// Ready, RolledBack or Failed.
    pub result: Phase,
    /// Whether the revision changed what runs (a DORA deployment).
    pub deployed: bool,
    /// Why it was rolled back: the forward step that failed, `Aborted` or
    /// `Superseded`.
    pub rollback_reason: Option<String>,
    /// Seconds from the failure to the previous version serving again.
    pub time_to_restore: Option<f64>,
}

/// What changed between the status before and after one write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Happened {
    /// Moments to notify about, in order.
    pub notify: Vec<NotifyOn>,
    /// Steps that finished.
    pub finished: Vec<FinishedStep>,
    /// The revision ended.
    pub ended: Option<Ended>,
}

/// Compares the status before and after a write.
pub fn between(old: &ReleaseStatus, new: &ReleaseStatus, now: Timestamp) -> Happened {
    let mut happened = Happened::default();
    let Some(revision) = new.revision else {
        return happened;
    };
    let same_revision = old.revision == Some(revision);
    if !same_revision {
        happened.notify.push(NotifyOn::Started);
    }
    let moved = !same_revision || old.phase != new.phase;
    if moved && new.phase == Some(Phase::AwaitingApproval) {
        happened.notify.push(NotifyOn::AwaitingApproval);
    }
    if moved && new.phase == Some(Phase::Waiting) {
        happened.notify.push(NotifyOn::Waiting);
    }
    for step in &new.steps {
        let Some(finished) = step.finished_at.as_ref().map(|t| t.0) else {
            continue;
        };
        if !matches!(step.state, StepState::Succeeded | StepState::Failed) {
            continue;
        }
        let before = same_revision
            .then(|| old.steps.iter().find(|s| s.name == step.name))
            .flatten();
        if before.is_some_and(|s| s.finished_at.is_some()) {
            continue;
        }
        let started = step.started_at.as_ref().map_or(finished, |t| t.0);
        happened.finished.push(FinishedStep {
            name: step.name.clone(),
            state: step.state,
            seconds: finished.duration_since(started).as_secs_f64().max(0.0),
        });
    }
    if let Some(result) = new.phase.filter(|p| p.is_terminal())
        && moved
    {
        happened.notify.push(match result {
            Phase::Ready => NotifyOn::Ready,
            Phase::RolledBack => NotifyOn::RolledBack,
            _ => NotifyOn::Failed,
        });
        happened.ended = Some(ended(new, result, now));
    }
    happened
}

fn ended(new: &ReleaseStatus, result: Phase, now: Timestamp) -> Ended {
    let failed = new.steps.iter().find(|s| {
        s.state == StepState::Failed && Step::from_name(&s.name).is_some_and(|step| !step.is_undo())
    });
    let failure = new.failure.as_deref().unwrap_or_default();
    let rollback_reason = (result == Phase::RolledBack).then(|| {
        if failure.contains("aborted by request") {
            "Aborted".to_owned()
        } else if failure.contains("superseded") {
            "Superseded".to_owned()
        } else {
            failed.map_or_else(|| "Unknown".to_owned(), |s| s.name.clone())
        }
    });
    let time_to_restore = (result == Phase::RolledBack)
        .then(|| failed.and_then(|s| s.finished_at.as_ref()).map(|t| t.0))
        .flatten()
        .map(|at| now.duration_since(at).as_secs_f64().max(0.0));
    Ended {
        result,
        deployed: result != Phase::Failed || steps::anything_changed(&new.steps),
        rollback_reason,
        time_to_restore,
    }
}

/// The deployment log (runbook 4.1): the record the seed's team wrote by
/// hand, as Markdown, newest first.
pub fn deployment_log(namespace: &str, release: &str, history: &[HistoryEntry]) -> String {
    let mut out = format!(
        "# Deployment log: {namespace}/{release}\n\nKept by Lockkeeper from the Release's status.history, newest first.\n"
    );
    if history.is_empty() {
        out.push_str("\nNo revision has finished yet.\n");
    }
    for entry in history {
        let result = crate::runbook::planner::phase_name(entry.result);
        let _ = write!(
            out,
            "\n## Revision {} · {} · {result}\n\n",
            entry.revision, entry.version
        );
        let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.as_ref()
                .map_or_else(|| "-".to_owned(), |t| t.0.to_string())
        };
        let _ = writeln!(
            out,
            "- Started: {}; finished: {}",
            time(&entry.started_at),
            time(&entry.finished_at)
        );
        if let Some(by) = &entry.approved_by {
            let _ = writeln!(out, "- Approved by: {by}");
        }
        if let Some(reason) = &entry.reason {
            let _ = writeln!(out, "- Reason: {}", one_line(reason));
        }
        let changes = &entry.changes;
        for (title, items) in [
            ("Features", &changes.features),
            ("Fixes", &changes.fixes),
            ("Config", &changes.config),
            ("Database", &changes.database),
            ("Dependencies", &changes.dependencies),
        ] {
            if !items.is_empty() {
                let _ = writeln!(out, "- {title}:");
                for item in items {
                    let _ = writeln!(out, "  - {}", one_line(item));
                }
            }
        }
        for (title, items) in [("Undone", &entry.undone), ("Left as is", &entry.left_as_is)] {
            if !items.is_empty() {
                let _ = writeln!(out, "- {title}:");
                for item in items {
                    let _ = writeln!(out, "  - {}", one_line(item));
                }
            }
        }
        if !entry.steps.is_empty() {
            out.push_str("\n| Step | Result | Started | Took |\n|---|---|---|---|\n");
            for s in &entry.steps {
                let started = s.started_at.as_ref().map(|t| t.0);
                let took = match (started, s.finished_at.as_ref().map(|t| t.0)) {
                    (Some(a), Some(b)) => format!("{:.1}s", b.duration_since(a).as_secs_f64()),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {:?} | {} | {took} |",
                    s.name,
                    s.state,
                    started.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                );
            }
        }
    }
    out
}

/// Keeps a message on one Markdown line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::status::StepStatus;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap_or_else(|e| panic!("{e}"))
    }

    fn step(name: &str, state: StepState, from: i64, to: Option<i64>) -> StepStatus {
        StepStatus {
            name: name.into(),
            state,
            started_at: Some(Time(at(from))),
            finished_at: to.map(|t| Time(at(t))),
            message: None,
            job: None,
        }
    }

    #[test]
    fn a_new_revision_is_started_and_a_ready_one_ends_once() {
        let old = ReleaseStatus {
            revision: Some(1),
            phase: Some(Phase::Ready),
            ..ReleaseStatus::default()
        };
        let started = ReleaseStatus {
            revision: Some(2),
            phase: Some(Phase::Pending),
            ..ReleaseStatus::default()
        };
        let happened = between(&old, &started, at(0));
        assert_eq!(happened.notify, [NotifyOn::Started]);
        assert!(happened.ended.is_none());
        let ready = ReleaseStatus {
            phase: Some(Phase::Ready),
            steps: vec![step("Deploy", StepState::Succeeded, 0, Some(4))],
            ..started.clone()
        };
        let happened = between(&started, &ready, at(5));
        assert_eq!(happened.notify, [NotifyOn::Ready]);
        assert_eq!(happened.finished[0].seconds, 4.0);
        let ended = happened.ended.unwrap_or_else(|| panic!("not ended"));
        assert!(ended.deployed && ended.rollback_reason.is_none());
        assert_eq!(between(&ready, &ready, at(6)), Happened::default());
    }

    #[test]
    fn a_rollback_names_the_failed_step_and_the_time_to_restore() {
        let running = ReleaseStatus {
            revision: Some(3),
            phase: Some(Phase::RollingBack),
            steps: vec![step("Verify", StepState::Failed, 0, Some(10))],
            ..ReleaseStatus::default()
        };
        let rolled_back = ReleaseStatus {
            phase: Some(Phase::RolledBack),
            steps: vec![
                step("Verify", StepState::Failed, 0, Some(10)),
                step("RollBackTraffic", StepState::Succeeded, 11, Some(12)),
            ],
            ..running.clone()
        };
        let happened = between(&running, &rolled_back, at(13));
        assert_eq!(happened.notify, [NotifyOn::RolledBack]);
        assert_eq!(happened.finished.len(), 1, "only the undo step is new");
        let ended = happened.ended.unwrap_or_else(|| panic!("not ended"));
        assert_eq!(ended.rollback_reason.as_deref(), Some("Verify"));
        assert_eq!(ended.time_to_restore, Some(3.0));
    }

    #[test]
    fn a_failure_before_any_change_is_not_a_deployment() {
        let old = ReleaseStatus {
            revision: Some(1),
            phase: Some(Phase::Preflight),
            ..ReleaseStatus::default()
        };
        let failed = ReleaseStatus {
            phase: Some(Phase::Failed),
            steps: vec![step("Preflight", StepState::Failed, 0, Some(2))],
            ..old.clone()
        };
        let ended = between(&old, &failed, at(3))
            .ended
            .unwrap_or_else(|| panic!("not ended"));
        assert!(!ended.deployed);
    }

    #[test]
    fn the_log_lists_revisions_newest_first_on_safe_lines() {
        let entry = |revision: i64, result: Phase| HistoryEntry {
            revision,
            version: format!("v{revision}"),
            result,
            reason: (result != Phase::Ready).then(|| "Verify failed:\nerror | 500".into()),
            started_at: Some(Time(at(0))),
            finished_at: Some(Time(at(60))),
            approved_by: None,
            freeze_overridden_by: None,
            changes: crate::api::release::Changes {
                features: vec!["Faster checkout".into()],
                ..Default::default()
            },
            undone: vec![],
            left_as_is: vec![],
            steps: vec![step("Deploy", StepState::Succeeded, 0, Some(30))],
        };
        let log = deployment_log(
            "prod",
            "shop",
            &[entry(2, Phase::RolledBack), entry(1, Phase::Ready)],
        );
        let two = log.find("## Revision 2").unwrap_or(usize::MAX);
        let one = log.find("## Revision 1").unwrap_or(0);
        assert!(two < one, "{log}");
        assert!(
            log.contains("- Reason: Verify failed: error \\| 500"),
            "{log}"
        );
        assert!(log.contains("  - Faster checkout"));
        assert!(log.contains("| Deploy | Succeeded |"));
    }
}
