//! When a schedule's runs end: pure functions of its cadence, hour and IANA time zone.
//!
//! A boundary is `hour:00` local time on every day (daily), on one weekday (weekly) or on one
//! day of the month (monthly). Daylight saving time: a local time that does not exist that day
//! (the clocks jump over it) is the first instant after the jump; a local time that happens
//! twice (the clocks go back) is the earlier one. Boundaries strictly increase, so consecutive
//! runs `[previous end, next boundary after it)` neither overlap nor leave a gap.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How often a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "every", rename_all = "snake_case")]
pub enum Cadence {
    Daily,
    /// On `weekday`: 1 (Monday) ..= 7 (Sunday).
    Weekly {
        weekday: u32,
    },
    /// On `day_of_month`: 1..=28 (every month has it).
    Monthly {
        day_of_month: u32,
    },
}

/// A schedule's boundaries: cadence, hour and zone (validated: hour ≤ 23, weekday 1..=7, day of
/// month 1..=28, a known zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundaries {
    pub cadence: Cadence,
    pub hour: u32,
    pub zone: Tz,
}

/// Looks up an IANA zone name; empty means UTC.
pub fn zone(name: &str) -> Option<Tz> {
    if name.is_empty() {
        return Some(Tz::UTC);
    }
    name.parse().ok()
}

impl Boundaries {
    /// Whether a run may end on local day `day`.
    fn on(&self, day: NaiveDate) -> bool {
        match self.cadence {
            Cadence::Daily => true,
            Cadence::Weekly { weekday } => day.weekday().number_from_monday() == weekday,
            Cadence::Monthly { day_of_month } => day.day() == day_of_month,
        }
    }

    /// The instant of `hour:00` on local day `day` (DST resolved as the module says).
    fn at(&self, day: NaiveDate) -> DateTime<Utc> {
        let local = day.and_time(NaiveTime::from_hms_opt(self.hour, 0, 0).unwrap_or_default());
        resolve(self.zone, local)
    }

    /// The first boundary strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        // From the local day before `t` (a boundary on it may still be after `t` when the zone's
        // offset is large), forward: a month and a few days always holds one.
        let mut day = t.with_timezone(&self.zone).date_naive() - Duration::days(1);
        for _ in 0..40 {
            if self.on(day) {
                let at = self.at(day);
                if at > t {
                    return at;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        // Unreachable for validated boundaries; a day later keeps the ranges increasing.
        t + Duration::days(1)
    }

    /// The last boundary at or before `t` (a schedule's default start).
    pub fn at_or_before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let mut day = t.with_timezone(&self.zone).date_naive() + Duration::days(1);
        for _ in 0..40 {
            if self.on(day) {
                let at = self.at(day);
                if at <= t {
                    return at;
                }
            }
            day = day.pred_opt().unwrap_or(day);
        }
        t
    }
}

/// A local time as an instant: the earlier of two (clocks going back), or the first instant
/// after a jump over it (clocks going forward).
fn resolve(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first local minute after it that exists is where the clocks landed.
            // Gaps are at most a day long (Samoa, 2011); minutes find half-hour shifts too.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                match zone.from_local_datetime(&probe) {
                    LocalResult::Single(at) => return at.with_timezone(&Utc),
                    LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
                    LocalResult::None => {}
                }
            }
            Utc.from_utc_datetime(&local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn b(cadence: Cadence, hour: u32, zone_name: &str) -> Boundaries {
        Boundaries {
            cadence,
            hour,
            zone: zone(zone_name).unwrap(),
        }
    }

    /// The first `n` boundaries after `start`, each the next after the previous.
    fn chain(b: &Boundaries, start: &str, n: usize) -> Vec<String> {
        let mut t = utc(start);
        (0..n)
            .map(|_| {
                t = b.next_after(t);
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn daily_weekly_and_monthly_boundaries() {
        let cases: Vec<(Boundaries, &str, Vec<&str>)> = vec![
            (
                b(Cadence::Daily, 6, ""),
                "2026-11-25T06:00:00Z",
                vec!["2026-11-26T06:00:00+00:00", "2026-11-27T06:00:00+00:00"],
            ),
            (
                b(Cadence::Daily, 6, ""),
                "2026-11-25T05:59:59Z",
                vec!["2026-11-25T06:00:00+00:00", "2026-11-26T06:00:00+00:00"],
            ),
            (
                // 2026-11-25 is a Wednesday; Monday is 1.
                b(Cadence::Weekly { weekday: 1 }, 0, "Europe/Paris"),
                "2026-11-25T12:00:00Z",
                vec!["2026-11-29T23:00:00+00:00", "2026-12-06T23:00:00+00:00"],
            ),
            (
                b(Cadence::Weekly { weekday: 7 }, 23, "Asia/Tokyo"),
                "2026-11-29T14:00:00Z",
                vec!["2026-12-06T14:00:00+00:00", "2026-12-13T14:00:00+00:00"],
            ),
            (
                b(Cadence::Monthly { day_of_month: 28 }, 9, "America/New_York"),
                "2026-01-01T00:00:00Z",
                vec![
                    "2026-01-28T14:00:00+00:00",
                    "2026-02-28T14:00:00+00:00",
                    "2026-03-28T13:00:00+00:00",
                ],
            ),
            (
                b(
                    Cadence::Monthly { day_of_month: 1 },
                    0,
                    "Pacific/Kiritimati",
                ),
                "2026-11-30T00:00:00Z",
                vec!["2026-11-30T10:00:00+00:00", "2026-12-31T10:00:00+00:00"],
            ),
        ];
        for (boundaries, start, expected) in cases {
            assert_eq!(
                chain(&boundaries, start, expected.len()),
                expected,
                "{boundaries:?} from {start}"
            );
        }
    }

    #[test]
    fn a_local_hour_that_does_not_exist_is_the_first_instant_after_the_jump() {
        // London springs forward at 01:00 GMT on 2026-03-29: 01:00 local does not exist; the
        // clocks read 02:00 BST at 01:00 UTC.
        let london = b(Cadence::Daily, 1, "Europe/London");
        assert_eq!(
            chain(&london, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:00:00+00:00",
            ]
        );
        // New York springs forward at 02:00 EST on 2026-03-08 (07:00 UTC): 02:00 → 03:00 EDT.
        let new_york = b(Cadence::Daily, 2, "America/New_York");
        assert_eq!(
            chain(&new_york, "2026-03-06T12:00:00Z", 3),
            [
                "2026-03-07T07:00:00+00:00",
                "2026-03-08T07:00:00+00:00",
                "2026-03-09T06:00:00+00:00",
            ]
        );
        // The day of the jump is 23 hours long: the run covering it is too, and no gap.
        let days: Vec<DateTime<Utc>> = chain(&new_york, "2026-03-06T12:00:00Z", 3)
            .iter()
            .map(|s| utc(s))
            .collect();
        assert_eq!(days[2] - days[1], Duration::hours(23));
    }

    #[test]
    fn a_local_hour_that_happens_twice_is_the_earlier() {
        // London falls back at 02:00 BST on 2026-10-25: 01:00 local happens at 00:00 UTC (BST)
        // and at 01:00 UTC (GMT); the earlier is the boundary.
        let london = b(Cadence::Daily, 1, "Europe/London");
        assert_eq!(
            chain(&london, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:00:00+00:00",
                "2026-10-25T00:00:00+00:00",
                "2026-10-26T01:00:00+00:00",
            ]
        );
        // New York falls back at 02:00 EDT on 2026-11-01: 01:00 happens at 05:00 and 06:00 UTC.
        let new_york = b(Cadence::Weekly { weekday: 7 }, 1, "America/New_York");
        assert_eq!(
            chain(&new_york, "2026-10-26T00:00:00Z", 2),
            ["2026-11-01T05:00:00+00:00", "2026-11-08T06:00:00+00:00"]
        );
        // The day of the fall back is 25 hours long.
        let daily = b(Cadence::Daily, 1, "America/New_York");
        let days: Vec<DateTime<Utc>> = chain(&daily, "2026-10-31T12:00:00Z", 2)
            .iter()
            .map(|s| utc(s))
            .collect();
        assert_eq!(days[1] - days[0], Duration::hours(25));
    }

    #[test]
    fn the_default_start_is_the_last_boundary_at_or_before_now() {
        let daily = b(Cadence::Daily, 6, "Europe/London");
        assert_eq!(
            daily.at_or_before(utc("2026-11-25T05:00:00Z")),
            utc("2026-11-24T06:00:00Z")
        );
        assert_eq!(
            daily.at_or_before(utc("2026-11-25T06:00:00Z")),
            utc("2026-11-25T06:00:00Z")
        );
        let monthly = b(Cadence::Monthly { day_of_month: 15 }, 0, "");
        let start = monthly.at_or_before(utc("2026-11-25T05:00:00Z"));
        assert_eq!(start, utc("2026-11-15T00:00:00Z"));
        assert_eq!(monthly.next_after(start), utc("2026-12-15T00:00:00Z"));
    }

    #[test]
    fn boundaries_strictly_increase_through_a_year_of_every_kind() {
        for zone_name in [
            "Europe/London",
            "America/New_York",
            "Australia/Lord_Howe",
            "",
        ] {
            for cadence in [
                Cadence::Daily,
                Cadence::Weekly { weekday: 3 },
                Cadence::Monthly { day_of_month: 28 },
            ] {
                for hour in [0, 1, 2, 3, 23] {
                    let boundaries = b(cadence, hour, zone_name);
                    let mut t = utc("2026-01-01T00:00:00Z");
                    while t < utc("2027-01-01T00:00:00Z") {
                        let next = boundaries.next_after(t);
                        assert!(next > t, "{boundaries:?} after {t}");
                        assert!(next - t <= Duration::days(32), "{boundaries:?} after {t}");
                        t = next;
                    }
                }
            }
        }
    }
}
