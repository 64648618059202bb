//! One measurement's outcome, and the tally that turns a check's
//! measurements into a verdict.

use std::fmt;

use crate::api::checks::Check;
use crate::api::status::{CheckResult, CheckStatus};

/// What one measurement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The target met the check's expectation.
    Pass,
    /// The target did not meet it (or could not be reached, for a target
    /// under verification).
    Fail,
    /// No answer: no data, NaN, or the measuring system (Prometheus) was
    /// unreachable. Never counts as a pass.
    Inconclusive,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "passed",
            Outcome::Fail => "failed",
            Outcome::Inconclusive => "inconclusive",
        })
    }
}

/// One measurement of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Its outcome.
    pub outcome: Outcome,
    /// The measured value as text (a status code, a query result, a
    /// latency), for `status.checks[].lastValue` and events.
    pub value: Option<String>,
    /// What was measured and why it came out so, for people.
    pub message: String,
}

impl Measurement {
    /// A passing measurement.
    pub fn pass(value: Option<String>, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Pass,
            value,
            message: message.into(),
        }
    }

    /// A failing measurement.
    pub fn fail(value: Option<String>, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Fail,
            value,
            message: message.into(),
        }
    }

    /// A measurement that gave no answer.
    pub fn inconclusive(value: Option<String>, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Inconclusive,
            value,
            message: message.into(),
        }
    }
}

/// How many measurements a check takes and how many bad ones it tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Measurements to take (at least 1).
    pub count: u32,
    /// Failed measurements tolerated.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated.
    pub inconclusive_limit: u32,
}

impl Limits {
    /// A check's limits with the API's defaults (1 measurement, no failure
    /// and no inconclusive one tolerated).
    pub fn of(check: &Check) -> Self {
        Self::new(
            check.count.unwrap_or(1),
            check.failure_limit.unwrap_or(0),
            check.inconclusive_limit.unwrap_or(0),
        )
    }

    /// Limits from numbers; a `count` of 0 is taken as 1.
    pub fn new(count: u32, failure_limit: u32, inconclusive_limit: u32) -> Self {
        Self {
            count: count.max(1),
            failure_limit,
            inconclusive_limit,
        }
    }
}

/// Where a check stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// More measurements are needed.
    Running,
    /// `count` measurements were taken within the limits.
    Passed,
    /// More measurements failed, or were inconclusive, than tolerated.
    Failed,
}

impl Verdict {
    /// The status result, once decided.
    pub fn result(self) -> Option<CheckResult> {
        match self {
            Verdict::Running => None,
            Verdict::Passed => Some(CheckResult::Passed),
            Verdict::Failed => Some(CheckResult::Failed),
        }
    }
}

/// The counts of a check's measurements so far. Pure: the caller stores the
/// counts (in `status.checks`) and rebuilds the tally from them after a
/// restart with [`Tally::from_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    limits: Limits,
    passed: u32,
    failed: u32,
    inconclusive: u32,
}

impl Tally {
    /// A tally with no measurements yet.
    pub fn new(limits: Limits) -> Self {
        Self::from_counts(limits, 0, 0, 0)
    }

    /// A tally resumed from counts recorded earlier.
    pub fn from_counts(limits: Limits, passed: u32, failed: u32, inconclusive: u32) -> Self {
        Self {
            limits,
            passed,
            failed,
            inconclusive,
        }
    }

    /// A tally resumed from a check's status.
    pub fn from_status(limits: Limits, status: &CheckStatus) -> Self {
        Self::from_counts(limits, status.passed, status.failed, status.inconclusive)
    }

    /// Counts one measurement and returns the verdict after it. Once the
    /// verdict is decided, further measurements are not counted: a decided
    /// check stays decided.
    pub fn record(&mut self, outcome: Outcome) -> Verdict {
        if self.verdict() != Verdict::Running {
            return self.verdict();
        }
        let counter = match outcome {
            Outcome::Pass => &mut self.passed,
            Outcome::Fail => &mut self.failed,
            Outcome::Inconclusive => &mut self.inconclusive,
        };
        *counter = counter.saturating_add(1);
        self.verdict()
    }

    /// Failed once more measurements failed than `failureLimit`, or more
    /// were inconclusive than `inconclusiveLimit`; passed once `count` were
    /// taken otherwise; running until then.
    pub fn verdict(&self) -> Verdict {
        if self.failed > self.limits.failure_limit
            || self.inconclusive > self.limits.inconclusive_limit
        {
            Verdict::Failed
        } else if self.taken() >= self.limits.count {
            Verdict::Passed
        } else {
            Verdict::Running
        }
    }

    /// Measurements counted so far.
    pub fn taken(&self) -> u32 {
        self.passed
            .saturating_add(self.failed)
            .saturating_add(self.inconclusive)
    }

    /// Passed measurements.
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// Failed measurements.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Inconclusive measurements.
    pub fn inconclusive(&self) -> u32 {
        self.inconclusive
    }

    /// The limits this tally applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Writes the counts, the verdict and the last measurement into a
    /// check's status (the caller sets `lastMeasuredAt`).
    pub fn write_status(&self, last: &Measurement, status: &mut CheckStatus) {
        status.passed = self.passed;
        status.failed = self.failed;
        status.inconclusive = self.inconclusive;
        status.last_value = last.value.clone();
        status.message = Some(last.message.clone());
        status.result = self.verdict().result();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(limits: Limits, outcomes: &[Outcome]) -> (Tally, Vec<Verdict>) {
        let mut tally = Tally::new(limits);
        let verdicts = outcomes.iter().map(|o| tally.record(*o)).collect();
        (tally, verdicts)
    }

    use Outcome::{Fail, Inconclusive as Inc, Pass};

    #[test]
    fn defaults_are_one_measurement_and_no_tolerance() {
        let check: Check = serde_json::from_value(serde_json::json!({
            "name": "health", "http": { "url": "http://127.0.0.1/" }
        }))
        .unwrap();
        assert_eq!(Limits::of(&check), Limits::new(1, 0, 0));
        assert_eq!(run(Limits::of(&check), &[Pass]).1, [Verdict::Passed]);
        assert_eq!(run(Limits::of(&check), &[Fail]).1, [Verdict::Failed]);
        assert_eq!(run(Limits::of(&check), &[Inc]).1, [Verdict::Failed]);
    }

    #[test]
    fn passes_after_count_measurements_within_the_limits() {
        let (tally, verdicts) = run(Limits::new(3, 1, 1), &[Pass, Fail, Inc]);
        assert_eq!(
            verdicts,
            [Verdict::Running, Verdict::Running, Verdict::Passed]
        );
        assert_eq!(
            (tally.passed(), tally.failed(), tally.inconclusive()),
            (1, 1, 1)
        );
    }

    #[test]
    fn fails_as_soon_as_a_limit_is_exceeded() {
        let (_, verdicts) = run(Limits::new(5, 1, 3), &[Fail, Pass, Fail]);
        assert_eq!(verdicts.last(), Some(&Verdict::Failed));
        let (_, verdicts) = run(Limits::new(5, 3, 0), &[Pass, Inc]);
        assert_eq!(verdicts, [Verdict::Running, Verdict::Failed]);
    }

    #[test]
    fn a_decided_tally_ignores_later_measurements() {
        let mut tally = Tally::new(Limits::new(1, 0, 0));
        assert_eq!(tally.record(Pass), Verdict::Passed);
        assert_eq!(tally.record(Fail), Verdict::Passed);
        assert_eq!(tally.failed(), 0);
    }

    #[test]
    fn resumes_from_status_and_writes_it_back() {
        let mut status = CheckStatus {
            name: "errors".into(),
            phase: crate::api::checks::CheckPhase::PreCutover,
            passed: 2,
            failed: 0,
            inconclusive: 1,
            last_value: None,
            last_measured_at: None,
            result: None,
            message: None,
        };
        let mut tally = Tally::from_status(Limits::new(4, 0, 1), &status);
        let last = Measurement::pass(Some("0.001".into()), "0.001 < 0.01");
        assert_eq!(tally.record(last.outcome), Verdict::Passed);
        tally.write_status(&last, &mut status);
        assert_eq!(status.passed, 3);
        assert_eq!(status.result, Some(CheckResult::Passed));
        assert_eq!(status.last_value.as_deref(), Some("0.001"));
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![Just(Pass), Just(Fail), Just(Inc)]
    }

    proptest! {
        /// The verdict after each measurement is what the definition says
        /// of the measurements counted so far, and once decided it sticks.
        #[test]
        fn verdict_follows_the_definition(
            count in 1u32..8, failure_limit in 0u32..4, inconclusive_limit in 0u32..4,
            outcomes in proptest::collection::vec(outcome(), 0..20),
        ) {
            let limits = Limits::new(count, failure_limit, inconclusive_limit);
            let (tally, verdicts) = run(limits, &outcomes);
            let mut decided: Option<Verdict> = None;
            let (mut p, mut f, mut i) = (0u32, 0u32, 0u32);
            for (outcome, verdict) in outcomes.iter().zip(&verdicts) {
                if let Some(d) = decided {
                    prop_assert_eq!(*verdict, d);
                    continue;
                }
                match outcome { Pass => p += 1, Fail => f += 1, Inc => i += 1 }
                let expected = if f > failure_limit || i > inconclusive_limit {
                    Verdict::Failed
                } else if p + f + i >= count {
                    Verdict::Passed
                } else {
                    Verdict::Running
                };
                prop_assert_eq!(*verdict, expected);
                if expected != Verdict::Running { decided = Some(expected); }
            }
            prop_assert_eq!((tally.passed(), tally.failed(), tally.inconclusive()), (p, f, i));
            // Never more than `count` measurements are counted.
            prop_assert!(tally.taken() <= count);
        }

        /// Inconclusive measurements never make a check pass that the same
        /// measurements without them would not pass.
        #[test]
        fn inconclusive_never_helps(
            count in 1u32..6, limit in 0u32..3,
            outcomes in proptest::collection::vec(outcome(), 0..12),
        ) {
            let limits = Limits::new(count, limit, limit);
            let (with, _) = run(limits, &outcomes);
            let as_pass: Vec<Outcome> = outcomes.iter()
                .map(|o| if *o == Inc { Pass } else { *o }).collect();
            let (pass_tally, _) = run(limits, &as_pass);
            if with.verdict() == Verdict::Passed {
                prop_assert_eq!(pass_tally.verdict(), Verdict::Passed);
            }
        }

        /// A run of only passes passes after exactly `count` of them.
        #[test]
        fn all_passes_pass_at_count(count in 1u32..50) {
            let outcomes = vec![Pass; count as usize];
            let (_, verdicts) = run(Limits::new(count, 0, 0), &outcomes);
            prop_assert_eq!(verdicts.iter().position(|v| *v != Verdict::Running),
                Some(count as usize - 1));
            prop_assert_eq!(verdicts.last(), Some(&Verdict::Passed));
        }
    }
}
