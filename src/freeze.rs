//! Freeze windows: recurring periods in which no new revision starts. Pure.

use jiff::{Timestamp, tz::TimeZone};

use crate::api::environment::FreezeWindow;

/// A freeze in force: when it ends and why it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    /// When the window closes.
    pub until: Timestamp,
    /// The schedule (and reason, when given) of the window.
    pub why: String,
}

/// The freeze in force at `now`, if any; with several, the one that ends
/// last. An error names the window whose schedule or time zone is invalid.
pub fn in_force(windows: &[FreezeWindow], now: Timestamp) -> Result<Option<Freeze>, String> {
    let mut latest: Option<Freeze> = None;
    for (i, window) in windows.iter().enumerate() {
        let cron: croner::Cron = window
            .schedule
            .parse()
            .map_err(|e| format!("freeze[{i}].schedule {:?}: {e}", window.schedule))?;
        let zone = match &window.time_zone {
            Some(name) => {
                TimeZone::get(name).map_err(|e| format!("freeze[{i}].timeZone {name:?}: {e}"))?
            }
            None => TimeZone::UTC,
        };
        let here = now.to_zoned(zone);
        let Ok(start) = cron.find_previous_occurrence(&here, true) else {
            continue;
        };
        let Ok(end) = start.timestamp().checked_add(window.duration.get()) else {
            continue;
        };
        if end > now && latest.as_ref().is_none_or(|l| end > l.until) {
            let why = match &window.reason {
                Some(reason) => format!("{reason} ({})", window.schedule),
                None => format!("freeze window {}", window.schedule),
            };
            latest = Some(Freeze { until: end, why });
        }
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn window(schedule: &str, duration: &str, tz: Option<&str>) -> FreezeWindow {
        serde_json::from_value(json!({"schedule": schedule, "duration": duration, "timeZone": tz}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn friday_evening_to_monday_morning() {
        let weekend = [window("0 18 * * FRI", "64h", None)];
        // 2026-12-04 is a Friday.
        assert_eq!(in_force(&weekend, at("2026-12-04T17:59:00Z")), Ok(None));
        let frozen = in_force(&weekend, at("2026-12-05T12:00:00Z"))
            .ok()
            .flatten();
        assert_eq!(frozen.map(|f| f.until), Some(at("2026-12-07T10:00:00Z")));
        assert_eq!(in_force(&weekend, at("2026-12-07T10:00:00Z")), Ok(None));
    }

    #[test]
    fn time_zones_move_the_window() {
        let berlin = [window("0 18 * * FRI", "1h", Some("Europe/Berlin"))];
        // 18:00 in Berlin is 17:00 UTC in December.
        assert!(in_force(&berlin, at("2026-12-04T17:30:00Z")).is_ok_and(|f| f.is_some()));
        assert_eq!(in_force(&berlin, at("2026-12-04T18:30:00Z")), Ok(None));
    }

    #[test]
    fn bad_schedules_and_zones_are_named() {
        let bad = [window("61 * * * *", "1h", None)];
        assert!(
            in_force(&bad, Timestamp::UNIX_EPOCH).is_err_and(|e| e.contains("freeze[0].schedule"))
        );
        let zone = [window("0 18 * * FRI", "1h", Some("Mars/Olympus"))];
        assert!(
            in_force(&zone, Timestamp::UNIX_EPOCH).is_err_and(|e| e.contains("freeze[0].timeZone"))
        );
    }
}
