//! The retention policy: which snapshots of a group to keep. One struct serves the CLI flags,
//! the vaultd config and the library.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// How many snapshots (or calendar buckets) to keep and for how long, plus the safety settings.
///
/// Counts follow restic: `keep_daily: 7` keeps the newest snapshot of each of the 7 newest days
/// that have a snapshot. `0` or absent turns a rule off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this (counted back from now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Span>,
    /// Keep the newest snapshot of each hour younger than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Span>,
    /// Keep snapshots carrying these tags. Each entry is `KEY` (any value) or `KEY=VALUE`;
    /// several comma-separated in one entry must all match; entries are alternatives.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// IANA time zone the calendar buckets are cut in (`Europe/Berlin`); UTC when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A snapshot dated further than this ahead of now is set aside (default 5 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub future_tolerance: Option<Span>,
    /// A plan removing more than this percentage of a group's snapshots needs `--confirm`
    /// (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_remove_percent: Option<u8>,
}

/// The calendar units a bucket rule counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Unit {
    pub const ALL: [Unit; 5] = [Unit::Hourly, Unit::Daily, Unit::Weekly, Unit::Monthly, Unit::Yearly];

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Hourly => "hourly",
            Unit::Daily => "daily",
            Unit::Weekly => "weekly",
            Unit::Monthly => "monthly",
            Unit::Yearly => "yearly",
        }
    }

    /// The bucket `time` falls in, in zone `tz`: `2026-11-20 13:00+01:00` (the offset keeps the
    /// two 02:00 hours of a DST fall-back apart), `2026-11-20`, `2026-W47`, `2026-11`, `2026`.
    pub fn bucket(self, time: DateTime<Utc>, tz: Tz) -> String {
        let local = time.with_timezone(&tz);
        let fmt = match self {
            Unit::Hourly => "%Y-%m-%d %H:00%:z",
            Unit::Daily => "%Y-%m-%d",
            Unit::Weekly => "%G-W%V",
            Unit::Monthly => "%Y-%m",
            Unit::Yearly => "%Y",
        };
        local.format(fmt).to_string()
    }
}

impl RetentionPolicy {
    /// The count rule for `unit`, if on.
    pub fn count(&self, unit: Unit) -> Option<u32> {
        let n = match unit {
            Unit::Hourly => self.keep_hourly,
            Unit::Daily => self.keep_daily,
            Unit::Weekly => self.keep_weekly,
            Unit::Monthly => self.keep_monthly,
            Unit::Yearly => self.keep_yearly,
        };
        n.filter(|&n| n > 0)
    }

    /// The within-bucket rule for `unit`, if on.
    pub fn within(&self, unit: Unit) -> Option<Span> {
        let s = match unit {
            Unit::Hourly => self.keep_within_hourly,
            Unit::Daily => self.keep_within_daily,
            Unit::Weekly => self.keep_within_weekly,
            Unit::Monthly => self.keep_within_monthly,
            Unit::Yearly => self.keep_within_yearly,
        };
        s.filter(|s| !s.is_zero())
    }

    pub fn keep_last(&self) -> Option<u32> {
        self.keep_last.filter(|&n| n > 0)
    }

    pub fn keep_within(&self) -> Option<Span> {
        self.keep_within.filter(|s| !s.is_zero())
    }

    /// Whether any rule keeps anything.
    pub fn keeps_something(&self) -> bool {
        self.keep_last().is_some()
            || self.keep_within().is_some()
            || Unit::ALL.iter().any(|&u| self.count(u).is_some() || self.within(u).is_some())
            || !self.keep_tags.is_empty()
    }

    pub fn time_zone(&self) -> Result<Tz> {
        match &self.timezone {
            None => Ok(Tz::UTC),
            Some(name) => Tz::from_str(name).map_err(|_| {
                Error::usage(format!("unknown time zone {name:?} in the retention policy"))
                    .hint("give an IANA zone name such as UTC, Europe/Berlin or America/New_York")
            }),
        }
    }

    pub fn future_tolerance(&self) -> Span {
        self.future_tolerance.unwrap_or(Span {
            seconds: 300,
            ..Span::default()
        })
    }

    pub fn max_remove_percent(&self) -> u8 {
        self.max_remove_percent.unwrap_or(50)
    }

    /// Refuse a policy that keeps nothing or cannot be applied, naming what is wrong.
    pub fn check(&self) -> Result<Tz> {
        if !self.keeps_something() {
            return Err(Error::usage("the retention policy keeps nothing: every snapshot would go")
                .hint("give at least one rule: --keep-last N, --keep-daily N (hourly, weekly, monthly, yearly), --keep-within 30d, --keep-within-daily 90d or --keep-tag T"));
        }
        if self.max_remove_percent() > 100 {
            return Err(
                Error::usage(format!("max_remove_percent {} is not a percentage", self.max_remove_percent()))
                    .hint("give a number from 0 to 100"),
            );
        }
        for t in &self.keep_tags {
            if t.split(',').any(|p| p.trim().is_empty() || p.trim().starts_with('=')) {
                return Err(
                    Error::usage(format!("keep-tag {t:?} names an empty tag")).hint("give KEY or KEY=VALUE, several joined with commas")
                );
            }
        }
        self.time_zone()
    }

    /// The rules that are on, as a short line (`last 5, daily 7, within 30d`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last() {
            parts.push(format!("last {n}"));
        }
        for u in Unit::ALL {
            if let Some(n) = self.count(u) {
                parts.push(format!("{} {n}", u.as_str()));
            }
        }
        if let Some(s) = self.keep_within() {
            parts.push(format!("within {s}"));
        }
        for u in Unit::ALL {
            if let Some(s) = self.within(u) {
                parts.push(format!("within-{} {s}", u.as_str()));
            }
        }
        for t in &self.keep_tags {
            parts.push(format!("tag {t}"));
        }
        parts.push(format!("zone {}", self.timezone.as_deref().unwrap_or("UTC")));
        parts.join(", ")
    }
}

/// A span of time counted back on the calendar: `30d`, `2y6m`, `12h`, `5min`, `1w`.
/// Units: `y` years, `m` months (as restic), `w` weeks, `d` days, `h` hours, `min` minutes,
/// `s` seconds. Years, months and days are calendar units in the policy's zone (a day across a
/// DST change is 23 or 25 hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub seconds: u64,
}

impl Span {
    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }

    /// `from` minus this span, on the calendar of `tz`.
    pub fn before(&self, from: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = from.with_timezone(&tz);
        let months = self.years * 12 + self.months;
        let local = local
            .checked_sub_months(chrono::Months::new(months))
            .and_then(|t| t.checked_sub_days(chrono::Days::new(u64::from(self.days))))
            .unwrap_or(local);
        let secs = i64::try_from(self.seconds).unwrap_or(i64::MAX);
        local.with_timezone(&Utc) - chrono::TimeDelta::try_seconds(secs).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// As a fixed length (months 30 days, years 365): for the future tolerance only.
    pub fn approx(&self) -> chrono::TimeDelta {
        let days = i64::from(self.years) * 365 + i64::from(self.months) * 30 + i64::from(self.days);
        chrono::TimeDelta::days(days) + chrono::TimeDelta::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX / 2))
    }
}

impl FromStr for Span {
    type Err = Error;

    fn from_str(s: &str) -> Result<Span> {
        let bad = || {
            Error::usage(format!("{s:?} is not a duration"))
                .hint("write it as a number and a unit, several joined: 30d, 2y6m, 12h, 5min, 1w (y, m = months, w, d, h, min, s)")
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let mut span = Span::default();
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let small = |n: u64| u32::try_from(n).map_err(|_| bad());
            match unit {
                "y" => span.years += small(n)?,
                "m" | "mo" => span.months += small(n)?,
                "w" => span.days += small(n.checked_mul(7).ok_or_else(bad)?)?,
                "d" => span.days += small(n)?,
                "h" => span.seconds += n.checked_mul(3600).ok_or_else(bad)?,
                "min" => span.seconds += n.checked_mul(60).ok_or_else(bad)?,
                "s" => span.seconds += n,
                _ => return Err(bad()),
            }
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0s");
        }
        if self.years > 0 {
            write!(f, "{}y", self.years)?;
        }
        if self.months > 0 {
            write!(f, "{}m", self.months)?;
        }
        if self.days > 0 {
            write!(f, "{}d", self.days)?;
        }
        let (h, rem) = (self.seconds / 3600, self.seconds % 3600);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if rem / 60 > 0 {
            write!(f, "{}min", rem / 60)?;
        }
        if rem % 60 > 0 {
            write!(f, "{}s", rem % 60)?;
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: Error| serde::de::Error::custom(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_back() {
        for (text, shown) in [
            ("30d", "30d"),
            ("2y6m", "2y6m"),
            ("12h", "12h"),
            ("5min", "5min"),
            ("1w", "7d"),
            ("1d12h30s", "1d12h30s"),
        ] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<Span>().unwrap(), s);
        }
        for bad in ["", "d", "30", "3x", "-1d", "1.5d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_calendar_day_across_dst_is_23_hours() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 is the spring-forward day in Europe/Berlin.
        let now: DateTime<Utc> = "2026-03-29T12:00:00Z".parse().unwrap();
        let day: Span = "1d".parse().unwrap();
        assert_eq!(now - day.before(now, berlin), chrono::TimeDelta::hours(23));
        assert_eq!(now - day.before(now, Tz::UTC), chrono::TimeDelta::hours(24));
    }

    #[test]
    fn an_empty_policy_and_a_bad_zone_are_refused() {
        let e = RetentionPolicy::default().check().unwrap_err();
        assert!(e.to_string().contains("keeps nothing"), "{e}");
        let zero = RetentionPolicy {
            keep_last: Some(0),
            ..Default::default()
        };
        assert!(zero.check().is_err());
        let p = RetentionPolicy {
            keep_daily: Some(7),
            timezone: Some("Mars/Olympus".into()),
            ..Default::default()
        };
        assert!(p.check().unwrap_err().to_string().contains("Mars/Olympus"));
    }

    #[test]
    fn the_policy_reads_from_toml() {
        let p: RetentionPolicy =
            toml::from_str("keep_daily = 7\nkeep_within = \"30d\"\nkeep_tags = [\"change\"]\ntimezone = \"Europe/Berlin\"\n").unwrap();
        assert_eq!(p.keep_daily, Some(7));
        assert_eq!(p.keep_within, Some("30d".parse().unwrap()));
        assert!(p.check().is_ok());
        assert!(toml::from_str::<RetentionPolicy>("keep_dayly = 7").is_err());
    }
}
