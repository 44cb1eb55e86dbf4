//! Flow schedules: a cron expression (5 fields, or 6 with seconds; parsed by `croner`) read in an
//! IANA time zone (`chrono-tz`), evaluated against instants — never against a fixed UTC offset
//! captured at creation (tokio-cron-scheduler#87/#107).
//!
//! Daylight-saving rule (README "Schedules and daylight saving"):
//! - A local time that does not exist (spring forward, e.g. 02:30 in Europe/Berlin on the last
//!   Sunday of March) runs **once, at the first valid instant after it** (03:00 local). When that
//!   instant is itself a tick of the schedule (`*/30` across a 30-minute shift), the two are one
//!   run.
//! - A local time that happens twice (fall back, e.g. 02:30 in Europe/Berlin on the last Sunday
//!   of October) runs **once, at its first occurrence**; the second occurrence is not a tick.
//! - Nothing here panics; a schedule with no next occurrence (none within croner's search
//!   limit) has no next run.
//!
//! The job ([`crate::service::runs`]) keeps one *anchor* per schedule (the instant up to which
//! ticks are handled, stored in the tenant store) and asks [`CronSchedule::due`] with the
//! current instant: only the stored anchor and the instant decide, so a restart — however long,
//! across a change of offset — neither repeats nor loses a tick (missed ticks collapse into one
//! run).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::Invalid;

/// Most candidate ticks looked at to get past the second pass of a repeated local hour (a
/// per-second schedule has 3,600 there).
const MAX_STEPS: usize = 4_000;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parse `cron` (5 fields, or 6 with seconds first) and an IANA zone name such as
    /// `Europe/Berlin`. Errors name the field: `("cron", …)` or `("timezone", …)`.
    pub fn parse(cron: &str, tz: &str) -> Result<Self, (&'static str, Invalid)> {
        let cron = croner::Cron::new(cron.trim())
            .with_seconds_optional()
            .parse()
            .map_err(|e| ("cron", Invalid(format!("invalid cron expression: {e}"))))?;
        let tz = Tz::from_str(tz.trim())
            .map_err(|_| ("timezone", Invalid("unknown IANA timezone".into())))?;
        Ok(Self { cron, tz })
    }

    /// The zone.
    pub fn zone(&self) -> Tz {
        self.tz
    }

    /// The first tick strictly after `after` under the daylight-saving rule of the module doc,
    /// or `None` when there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after.with_timezone(&self.tz);
        for _ in 0..MAX_STEPS {
            // croner walks local wall-clock time: a local time in a gap gives the first valid
            // instant after it, a repeated local time its first occurrence.
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let utc = next.with_timezone(&Utc);
            if utc > after {
                return Some(utc);
            }
            // `after` lies in the second pass of a repeated hour and `next` is the first pass of
            // a local time already behind it: that local time had its run. Walk on in local
            // time (strictly increasing), past the repeated hour.
            from = next;
        }
        None
    }

    /// The tick to run now, if any: the first tick after `anchor` when it is not later than
    /// `now`. The caller then moves the anchor to `now`, so ticks missed in between collapse
    /// into this one run.
    pub fn due(&self, anchor: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(anchor).filter(|t| *t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sched(c: &str, tz: &str) -> CronSchedule {
        CronSchedule::parse(c, tz).unwrap()
    }

    /// Run the job every `step_s` seconds from `from` to `to` as the server does (anchor moved
    /// to now after each run); the instants at which a run was queued.
    fn simulate(s: &CronSchedule, from: &str, to: &str, step_s: i64) -> Vec<DateTime<Utc>> {
        let (mut now, end) = (utc(from), utc(to));
        let mut anchor = now;
        let mut fired = Vec::new();
        while now <= end {
            if s.due(anchor, now).is_some() {
                fired.push(now);
                anchor = now;
            }
            now += chrono::Duration::seconds(step_s);
        }
        fired
    }

    fn local(s: &CronSchedule, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&s.zone()).naive_local()
    }

    #[test]
    fn berlin_spring_forward_runs_once_at_the_first_valid_instant() {
        let s = sched("30 2 * * *", "Europe/Berlin");
        // 2027-03-28: 02:00 CET → 03:00 CEST (01:00 UTC); 02:30 does not exist.
        assert_eq!(
            s.next_after(utc("2027-03-27T12:00:00Z")),
            Some(utc("2027-03-28T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2027-03-28T01:00:00Z")),
            Some(utc("2027-03-29T00:30:00Z"))
        );
        let fired = simulate(&s, "2027-03-26T12:00:00Z", "2027-03-30T12:00:00Z", 60);
        assert_eq!(
            fired,
            vec![
                utc("2027-03-27T01:30:00Z"),
                utc("2027-03-28T01:00:00Z"),
                utc("2027-03-29T00:30:00Z"),
                utc("2027-03-30T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_fall_back_runs_once_at_the_first_occurrence() {
        let s = sched("30 2 * * *", "Europe/Berlin");
        // 2027-10-31: 03:00 CEST → 02:00 CET (01:00 UTC); 02:30 happens at 00:30Z and 01:30Z.
        assert_eq!(
            s.next_after(utc("2027-10-30T12:00:00Z")),
            Some(utc("2027-10-31T00:30:00Z"))
        );
        // From inside the second pass (02:10 CET), the repeated 02:30 is not a tick.
        assert_eq!(
            s.next_after(utc("2027-10-31T01:10:00Z")),
            Some(utc("2027-11-01T01:30:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2027-10-31T00:30:00Z")),
            Some(utc("2027-11-01T01:30:00Z"))
        );
        let fired = simulate(&s, "2027-10-29T12:00:00Z", "2027-11-02T12:00:00Z", 60);
        assert_eq!(
            fired,
            vec![
                utc("2027-10-30T00:30:00Z"),
                utc("2027-10-31T00:30:00Z"),
                utc("2027-11-01T01:30:00Z"),
                utc("2027-11-02T01:30:00Z"),
            ]
        );
        // A schedule created during the second pass does not run the repeated time either.
        assert!(s
            .due(utc("2027-10-31T01:05:00Z"), utc("2027-10-31T01:35:00Z"))
            .is_none());
    }

    #[test]
    fn new_york_both_changes() {
        let s = sched("30 1 * * *", "America/New_York");
        // 2027-03-14: 02:00 EST → 03:00 EDT; 01:30 exists (EST, 06:30Z).
        let fired = simulate(&s, "2027-03-13T12:00:00Z", "2027-03-15T12:00:00Z", 60);
        assert_eq!(
            fired,
            vec![utc("2027-03-14T06:30:00Z"), utc("2027-03-15T05:30:00Z")]
        );
        // 2027-11-07: 02:00 EDT → 01:00 EST; 01:30 at 05:30Z (EDT) and 06:30Z (EST): once.
        let fired = simulate(&s, "2027-11-06T12:00:00Z", "2027-11-08T12:00:00Z", 60);
        assert_eq!(
            fired,
            vec![utc("2027-11-07T05:30:00Z"), utc("2027-11-08T06:30:00Z")]
        );
        // 02:30 does not exist on the spring day: 03:00 EDT (07:00Z).
        let s = sched("30 2 * * *", "America/New_York");
        assert_eq!(
            s.next_after(utc("2027-03-13T12:00:00Z")),
            Some(utc("2027-03-14T07:00:00Z"))
        );
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        let s = sched("*/30 * * * *", "Australia/Lord_Howe");
        // Spring 2027-10-03 02:00 LHST (+10:30) → 02:30 LHDT (+11): 02:00 merges into 02:30.
        let day = |fired: &[DateTime<Utc>], d: &str| -> Vec<NaiveDateTime> {
            fired
                .iter()
                .map(|t| local(&s, *t))
                .filter(|l| l.date().to_string() == d)
                .collect()
        };
        let fired = simulate(&s, "2027-10-01T12:00:00Z", "2027-10-04T12:00:00Z", 60);
        let d = day(&fired, "2027-10-03");
        assert_eq!(d.len(), 47, "{d:?}");
        let mut uniq = d.clone();
        uniq.dedup();
        assert_eq!(uniq, d);
        // Fall 2027-04-04 02:00 LHDT → 01:30 LHST: 01:30 happens twice and runs once.
        let fired = simulate(&s, "2027-04-02T12:00:00Z", "2027-04-05T12:00:00Z", 60);
        let d = day(&fired, "2027-04-04");
        assert_eq!(d.len(), 48, "{d:?}");
        let mut uniq = d.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 48);
        // Every run is 30 minutes after the previous one, or 60 across the repeated half hour.
        for w in fired.windows(2) {
            let gap = (w[1] - w[0]).num_minutes();
            assert!(gap == 30 || gap == 60, "{w:?}");
        }
    }

    #[test]
    fn utc_control() {
        for c in ["30 2 * * *", "30 1 * * *"] {
            let s = sched(c, "UTC");
            for (a, b) in [
                ("2027-03-27T12:00:00Z", "2027-03-29T12:00:00Z"),
                ("2027-10-30T12:00:00Z", "2027-11-01T12:00:00Z"),
            ] {
                assert_eq!(simulate(&s, a, b, 60).len(), 2);
            }
        }
        let s = sched("*/30 * * * *", "UTC");
        assert_eq!(
            simulate(&s, "2027-10-02T00:00:00Z", "2027-10-02T23:59:00Z", 60).len(),
            47
        );
    }

    #[test]
    fn created_in_summer_evaluated_in_winter() {
        // One schedule value evaluated months apart: the offset is the one at each instant
        // (tokio-cron-scheduler#87: a captured offset ran 10:00 Berlin jobs at 09:00 in winter).
        let s = sched("0 10 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(utc("2027-07-01T12:00:00Z")),
            Some(utc("2027-07-02T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2027-12-01T12:00:00Z")),
            Some(utc("2027-12-02T09:00:00Z"))
        );
        // Restart across the change: only the stored anchor and now decide — one run.
        let anchor = utc("2027-10-30T08:00:00Z");
        assert_eq!(
            s.due(anchor, utc("2027-11-02T07:00:00Z")),
            Some(utc("2027-10-31T09:00:00Z"))
        );
        assert_eq!(s.due(anchor, utc("2027-10-31T08:59:59Z")), None);
        // Asia/Shanghai `0 0 8 * * *` runs at 00:00 UTC only (tokio-cron-scheduler#105).
        let s = sched("0 0 8 * * *", "Asia/Shanghai");
        let fired = simulate(&s, "2027-01-01T12:00:00Z", "2027-01-03T12:00:00Z", 60);
        assert_eq!(
            fired,
            vec![utc("2027-01-02T00:00:00Z"), utc("2027-01-03T00:00:00Z")]
        );
    }

    #[test]
    fn never_panics_in_gaps_and_overlaps() {
        // Every minute across both Berlin changes, several expressions with seconds.
        for c in [
            "* * * * * *",
            "*/7 * 2 * * *",
            "0 30 2 * * *",
            "59 59 1 * * *",
        ] {
            let s = sched(c, "Europe/Berlin");
            for start in ["2027-03-28T00:00:00Z", "2027-10-31T00:00:00Z"] {
                let mut t = utc(start);
                for _ in 0..180 {
                    let n = s.next_after(t);
                    assert!(n.is_some_and(|n| n > t), "{c} {t}");
                    t += chrono::Duration::seconds(61);
                }
            }
        }
        assert_eq!(CronSchedule::parse("nope", "UTC").unwrap_err().0, "cron");
        assert_eq!(
            CronSchedule::parse("* * * * *", "Mars/Olympus")
                .unwrap_err()
                .0,
            "timezone"
        );
    }
}
