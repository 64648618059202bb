//! kstatus-style conditions: `Ready`, `Reconciling` and `Stalled`, plus the
//! runbook's own. Pure functions over a condition list.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The Release is serving the current revision.
pub const READY: &str = "Ready";
/// The operator is working toward the desired state.
pub const RECONCILING: &str = "Reconciling";
/// The operator cannot make progress without a change from a person.
pub const STALLED: &str = "Stalled";

/// A condition as the operator wants it, without timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// Condition type.
    pub type_: &'a str,
    /// True or False.
    pub status: bool,
    /// PascalCase reason.
    pub reason: &'a str,
    /// Human-readable message.
    pub message: String,
}

impl<'a> Desired<'a> {
    /// A condition that holds.
    pub fn truthy(type_: &'a str, reason: &'a str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn falsy(type_: &'a str, reason: &'a str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// Sets one condition, keeping its `lastTransitionTime` unless its status
/// changes. Returns true when anything but timestamps changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    desired: Desired<'_>,
    generation: i64,
    now: Timestamp,
) -> bool {
    let status = if desired.status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let changed = existing.status != status
                || existing.reason != desired.reason
                || existing.message != desired.message
                || existing.observed_generation != Some(generation);
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.to_owned();
            existing.reason = desired.reason.to_owned();
            existing.message = desired.message;
            existing.observed_generation = Some(generation);
            changed
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_owned(),
                status: status.to_owned(),
                reason: desired.reason.to_owned(),
                message: desired.message,
                observed_generation: Some(generation),
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Removes a condition; true when it was there.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Finds a condition.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

/// The three kstatus conditions for a Release that cannot run: Stalled True,
/// Ready False and Reconciling False, all with the same reason and message.
pub fn stalled(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> bool {
    let mut changed = set(
        conditions,
        Desired::truthy(STALLED, reason, message),
        generation,
        now,
    );
    changed |= set(
        conditions,
        Desired::falsy(READY, reason, message),
        generation,
        now,
    );
    changed |= set(
        conditions,
        Desired::falsy(RECONCILING, reason, message),
        generation,
        now,
    );
    changed
}

/// The three kstatus conditions for a Release being worked on: Reconciling
/// True, Ready False with the same reason and message, no Stalled.
pub fn progressing(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> bool {
    let mut changed = remove(conditions, STALLED);
    changed |= set(
        conditions,
        Desired::truthy(RECONCILING, reason, message),
        generation,
        now,
    );
    changed |= set(
        conditions,
        Desired::falsy(READY, reason, message),
        generation,
        now,
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = Vec::new();
        assert!(set(
            &mut conds,
            Desired::falsy(READY, "Deploying", "green 1/3"),
            1,
            at(10)
        ));
        assert!(set(
            &mut conds,
            Desired::falsy(READY, "Deploying", "green 2/3"),
            1,
            at(20)
        ));
        assert_eq!(conds[0].last_transition_time, Time(at(10)));
        assert!(set(
            &mut conds,
            Desired::truthy(READY, "Ready", "v2 serving"),
            1,
            at(30)
        ));
        assert_eq!(conds[0].last_transition_time, Time(at(30)));
    }

    #[test]
    fn unchanged_condition_reports_no_change() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            Desired::truthy(RECONCILING, "Deploying", "x"),
            3,
            at(1),
        );
        assert!(!set(
            &mut conds,
            Desired::truthy(RECONCILING, "Deploying", "x"),
            3,
            at(99)
        ));
        assert!(set(
            &mut conds,
            Desired::truthy(RECONCILING, "Deploying", "x"),
            4,
            at(99)
        ));
    }

    #[test]
    fn stalled_sets_all_three_kstatus_conditions() {
        let mut conds = Vec::new();
        stalled(&mut conds, "InvalidSpec", "bad", 2, at(5));
        assert!(is_true(&conds, STALLED));
        assert!(!is_true(&conds, READY));
        assert!(!is_true(&conds, RECONCILING));
        assert!(conds.iter().all(|c| c.observed_generation == Some(2)));
        assert!(remove(&mut conds, STALLED));
        assert!(get(&conds, STALLED).is_none());
    }
}
