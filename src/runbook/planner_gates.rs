//! The Environment's gates a revision passes before it changes anything:
//! promotion (the same build Ready upstream for the soak time) and
//! approval.

use std::time::Duration;

use super::{Outcome, Planner, UPSTREAM_POLL};
use crate::runbook::Upstream;

impl Planner<'_> {
    /// The promotion gate: the same build (version and pod template) Ready
    /// in a Release of the same name in an environment promoted from, for
    /// the soak time.
    pub(super) fn promote(&self) -> Outcome {
        let Some((from, soak, upstream)) = &self.obs.gates.promotion else {
            return Outcome::Skip("no promotion gate".into());
        };
        let version = self.st.version.clone().unwrap_or_default();
        let from = from.join(" or ");
        match upstream {
            None => Outcome::Wait(
                format!("looking for {version} in {from}"),
                Some(Duration::from_millis(200)),
            ),
            Some(Upstream::NotYet(why)) => Outcome::Wait(
                format!("waiting for {version} to be Ready in {from}: {why}"),
                Some(UPSTREAM_POLL),
            ),
            Some(Upstream::Ready { at, since }) => {
                let due = since.checked_add(*soak).unwrap_or(*since);
                let soaked = crate::api::Duration::from(*soak);
                if self.obs.now >= due {
                    return Outcome::Done(format!(
                        "{version} Ready in {at} since {}, longer than the soak time {soaked}",
                        since.round(jiff::Unit::Second).unwrap_or(*since)
                    ));
                }
                let left = due.duration_since(self.obs.now).unsigned_abs();
                Outcome::Wait(
                    format!(
                        "{version} is Ready in {at}; soaking {soaked} until {}",
                        due.round(jiff::Unit::Second).unwrap_or(due)
                    ),
                    Some(left.min(UPSTREAM_POLL).max(Duration::from_millis(200))),
                )
            }
        }
    }

    /// The approval gate: an approval naming this revision, by someone
    /// other than the author when four eyes are required. Admission has
    /// checked who may approve; this re-checks what the approval is for.
    pub(super) fn approve(&mut self) -> Outcome {
        let Some(distinct) = self.obs.gates.approval else {
            return Outcome::Skip("no approval required".into());
        };
        let revision = self.revision();
        let how = format!(
            "kubectl annotate release {} --overwrite {}={revision} {}=<your user name>",
            self.obs.name,
            crate::labels::request::APPROVE,
            crate::labels::request::APPROVER
        );
        match &self.obs.requests.approval {
            Some((r, by)) if *r == revision => {
                if distinct {
                    match &self.obs.requests.author {
                        None => {
                            return Outcome::Wait(
                                format!(
                                    "approved by {by}, but four eyes are required and who changed the spec last is unknown: the chart's author-stamping admission policy must be installed"
                                ),
                                None,
                            );
                        }
                        Some(author) if author == by => {
                            return Outcome::Wait(
                                format!(
                                    "{by} changed the spec and cannot approve it too (four eyes); someone else runs: {how}"
                                ),
                                None,
                            );
                        }
                        Some(_) => {}
                    }
                }
                self.st.approved_by = Some(by.clone());
                self.note(
                    false,
                    "Approved",
                    format!("revision {revision} approved by {by}"),
                );
                Outcome::Done(format!("approved by {by}"))
            }
            Some((r, _)) => Outcome::Wait(
                format!(
                    "waiting for approval of revision {revision} (the approval on record is for revision {r}): {how}"
                ),
                None,
            ),
            None => Outcome::Wait(
                format!("waiting for approval of revision {revision}: {how}"),
                None,
            ),
        }
    }
}
