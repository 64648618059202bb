//! A Go-style duration (`30s`, `10m`, `1h30m`) with a schema the API server can
//! check, so a malformed duration is rejected at `kubectl apply`, not at runtime.

use std::{borrow::Cow, fmt, str::FromStr, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The pattern every duration in the API must match: one or more
/// `<number><unit>` groups with units `ms`, `s`, `m`, `h` (Go's
/// `time.ParseDuration` without sub-millisecond units or signs).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A non-negative duration written the way Kubernetes and Go write them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(time::Duration);

impl Duration {
    /// A duration of the given number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(time::Duration::from_secs(secs))
    }

    /// A duration of the given number of milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(time::Duration::from_millis(ms))
    }

    /// The standard library duration.
    pub const fn get(self) -> time::Duration {
        self.0
    }
}

impl From<time::Duration> for Duration {
    fn from(d: time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a duration string was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseDurationError {
    /// Nothing was given.
    #[error("empty duration: write e.g. 30s, 10m or 1h30m")]
    Empty,
    /// A group has no number in front of its unit.
    #[error("duration {0:?}: expected a number before each unit (e.g. 1h30m)")]
    MissingNumber(String),
    /// A number has no unit after it.
    #[error("duration {0:?}: every number needs a unit: ms, s, m or h")]
    MissingUnit(String),
    /// A unit other than ms, s, m or h.
    #[error("duration {input:?}: unknown unit {unit:?}; use ms, s, m or h")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// The duration does not fit in 64-bit seconds.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        let mut rest = input;
        let mut total_ms: f64 = 0.0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..number_len];
            if number.is_empty() {
                return Err(ParseDurationError::MissingNumber(input.to_owned()));
            }
            let value: f64 = number
                .parse()
                .map_err(|_| ParseDurationError::MissingNumber(input.to_owned()))?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let scale_ms = match unit {
                "ms" => 1.0,
                "s" => 1_000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                "" => return Err(ParseDurationError::MissingUnit(input.to_owned())),
                other => {
                    return Err(ParseDurationError::UnknownUnit {
                        input: input.to_owned(),
                        unit: other.to_owned(),
                    });
                }
            };
            total_ms += value * scale_ms;
            rest = &rest[unit_len..];
        }
        // u64::MAX milliseconds is far beyond any sensible duration; cap well below it.
        if !total_ms.is_finite() || total_ms > 1e15 {
            return Err(ParseDurationError::Overflow(input.to_owned()));
        }
        Ok(Self(time::Duration::from_micros(
            (total_ms * 1000.0).round() as u64,
        )))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
        let (m, rem) = (rem / 60_000, rem % 60_000);
        let (s, ms) = (rem / 1000, rem % 1000);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_style_durations() {
        let cases = [
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("1.5h", 5_400_000),
            ("0s", 0),
        ];
        for (input, ms) in cases {
            let d: Duration = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(d.get().as_millis(), ms, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        assert_eq!("".parse::<Duration>(), Err(ParseDurationError::Empty));
        assert!(matches!(
            "10".parse::<Duration>(),
            Err(ParseDurationError::MissingUnit(_))
        ));
        assert!(matches!(
            "m".parse::<Duration>(),
            Err(ParseDurationError::MissingNumber(_))
        ));
        assert!(matches!(
            "10d".parse::<Duration>(),
            Err(ParseDurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "-1s".parse::<Duration>(),
            Err(ParseDurationError::MissingNumber(_))
        ));
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            let back: Duration = d.to_string().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(back, d);
        }

        #[test]
        fn display_matches_the_schema_pattern(ms in 1u64..10_000_000_000) {
            let text = Duration::from_millis(ms).to_string();
            // Same language as DURATION_PATTERN, checked without a regex engine.
            prop_assert!(text.parse::<Duration>().is_ok());
            prop_assert!(text.chars().all(|c| c.is_ascii_digit() || "hms".contains(c)));
        }
    }
}
