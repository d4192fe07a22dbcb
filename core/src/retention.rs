//! Retention: which snapshots `forget` keeps.
//!
//! Per source name, the union of: the N newest (`last`); the newest snapshot of each of
//! the last N hours, days, ISO weeks, months and years **that have snapshots** (`hourly`,
//! `daily`, `weekly`, `monthly`, `yearly`); every snapshot within a span before the group's newest one
//! (`within`). Calendar buckets use the snapshot's time in the zone given (the command line
//! passes the machine's local zone, so `TZ` is honoured). The newest snapshot of a group is
//! always kept. Snapshots with equal times are ordered by id, so the result never depends
//! on listing order.
//!
//! The policy can be stored in the repository (`policy/<id>`, encrypted): `forget` without
//! rules uses it.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, FixedOffset, Months, TimeZone};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::crypto::Keys;
use crate::{Error, Id, Result};

const AAD: &[u8] = b"dbvault policy";

/// A calendar span such as `1y6mo`, `30d`, `12h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Calendar months (a year is 12).
    pub months: u32,
    /// Seconds (days, hours, minutes, seconds).
    pub seconds: u64,
}

impl Span {
    /// Parses `<n><unit>...` with units `y`, `mo`, `w`, `d`, `h`, `min`, `s` (e.g. `1y6mo`,
    /// `7d`, `36h`, `90s`). A bare `m` is refused: minutes and months are both common.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the problem.
    pub fn parse(text: &str) -> Result<Span> {
        let bad = |why: &str| Error::Invalid(format!("invalid duration {text:?}: {why}"));
        let mut span = Span::default();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let secs = |mult: u64| n.checked_mul(mult).ok_or_else(|| bad("too large"));
            match unit {
                "y" => span.months += u32::try_from(n * 12).map_err(|_| bad("too large"))?,
                "mo" => span.months += u32::try_from(n).map_err(|_| bad("too large"))?,
                "w" => span.seconds += secs(7 * 86400)?,
                "d" => span.seconds += secs(86400)?,
                "h" => span.seconds += secs(3600)?,
                "min" => span.seconds += secs(60)?,
                "s" => span.seconds += n,
                "m" => {
                    return Err(bad(
                        "unit m is ambiguous: write min (minutes) or mo (months)",
                    ))
                }
                "" => return Err(bad("a unit is missing (y, mo, w, d, h, min, s)")),
                u => return Err(bad(&format!("unknown unit {u:?} (y, mo, w, d, h, min, s)"))),
            }
        }
        Ok(span)
    }

    /// `t` minus this span (calendar months first, then seconds).
    pub fn before(&self, t: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let t = t.checked_sub_months(Months::new(self.months)).unwrap_or(t);
        i64::try_from(self.seconds)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| t.checked_sub_signed(d))
            .unwrap_or(DateTime::<FixedOffset>::MIN_UTC.fixed_offset())
    }

    /// Wall-clock seconds of the span (months as 30 days), for waits and timeouts.
    pub fn approx_seconds(&self) -> u64 {
        u64::from(self.months) * 30 * 86400 + self.seconds
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, mo) = (self.months / 12, self.months % 12);
        let (d, r) = (self.seconds / 86400, self.seconds % 86400);
        let (h, r) = (r / 3600, r % 3600);
        let (mi, s) = (r / 60, r % 60);
        let mut out = String::new();
        for (n, u) in [
            (u64::from(y), "y"),
            (u64::from(mo), "mo"),
            (d, "d"),
            (h, "h"),
            (mi, "min"),
            (s, "s"),
        ] {
            if n > 0 {
                out.push_str(&format!("{n}{u}"));
            }
        }
        if out.is_empty() {
            out.push_str("0s");
        }
        f.write_str(&out)
    }
}

/// Retention rules as the command line (`--keep-daily 7`) and the configuration file
/// (`keep_daily = 7`) both give them: one type for both, deriving clap's `Args` (feature
/// `clap`) and serde. [`KeepOptions::policy`] makes the [`Policy`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct KeepOptions {
    /// Keep the N newest snapshots.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have snapshots.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have snapshots.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have snapshots.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span before the newest one (e.g. 14d, 6mo, 1y).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    #[serde(default)]
    pub keep_within: Option<String>,
}

impl KeepOptions {
    /// True when no rule is given.
    pub fn is_empty(&self) -> bool {
        *self == KeepOptions::default()
    }

    /// The policy these rules make (a rule not given keeps nothing by itself).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a `keep_within` that is not a duration.
    pub fn policy(&self) -> Result<Policy> {
        let within = match &self.keep_within {
            Some(w) => {
                Some(Span::parse(w).map_err(|e| Error::Invalid(format!("keep-within: {e}")))?)
            }
            None => None,
        };
        Ok(Policy {
            last: self.keep_last.unwrap_or(0),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
            within,
        })
    }
}

/// Retention rules. Zero counts are "no rule".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Keep the N newest.
    #[serde(default)]
    pub last: u32,
    /// Newest of each of the last N hours with snapshots (for continuous backups).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hourly: u32,
    /// Newest of each of the last N days with snapshots.
    #[serde(default)]
    pub daily: u32,
    /// Newest of each of the last N ISO weeks with snapshots.
    #[serde(default)]
    pub weekly: u32,
    /// Newest of each of the last N months with snapshots.
    #[serde(default)]
    pub monthly: u32,
    /// Newest of each of the last N years with snapshots.
    #[serde(default)]
    pub yearly: u32,
    /// Everything within this span before the newest snapshot.
    #[serde(default)]
    pub within: Option<Span>,
}

// A policy without hourly rules is stored as before, so older dbvaults still read it.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Policy {
    /// True when no rule is set (such a policy would keep only the latest).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
    }

    /// The compaction of a continuous backup (`backup --follow`), which takes a snapshot
    /// every few seconds: every snapshot of the last hour (a restore to any moment of it),
    /// the newest of each of the last 24 hours, then these rules' days, weeks and months.
    /// Rules this policy sets itself are kept; with none at all, the usual 7 daily, 4 weekly
    /// and 12 monthly. About 360 + 24 + 23 snapshots at a 10 s interval, so listing them
    /// stays cheap.
    #[must_use]
    pub fn continuous(mut self) -> Policy {
        if self.is_empty() {
            (self.daily, self.weekly, self.monthly) = (7, 4, 12);
        }
        if self.within.is_none() {
            self.within = Some(Span {
                months: 0,
                seconds: 3600,
            });
        }
        if self.hourly == 0 {
            self.hourly = 24;
        }
        self
    }

    /// The rules as `--keep-…` options, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.last, "last"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ] {
            if n > 0 {
                parts.push(format!("--keep-{what} {n}"));
            }
        }
        if let Some(w) = self.within {
            parts.push(format!("--keep-within {w}"));
        }
        if parts.is_empty() {
            "no rules".into()
        } else {
            parts.join(" ")
        }
    }
}

/// One snapshot's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Snapshot id.
    pub id: Id,
    /// Its time.
    pub time: DateTime<FixedOffset>,
    /// Why it is kept (e.g. `daily 2026-11-20`, `weekly 2026-W47`); empty: forget it.
    pub reasons: Vec<String>,
}

/// Applies `policy` to the snapshots of **one** group, in zone `tz`. Returns every
/// snapshot, newest first, with the reasons that keep it.
pub fn apply<Tz: TimeZone>(
    snaps: &[(Id, DateTime<FixedOffset>)],
    policy: &Policy,
    tz: &Tz,
) -> Vec<Verdict>
where
    Tz::Offset: std::fmt::Display,
{
    let mut out: Vec<Verdict> = snaps
        .iter()
        .map(|(id, time)| Verdict {
            id: *id,
            time: *time,
            reasons: Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let Some(newest) = out.first().map(|v| v.time) else {
        return out;
    };
    for (i, v) in out.iter_mut().enumerate() {
        if i == 0 {
            v.reasons.push("latest".into());
        }
        if (i as u64) < u64::from(policy.last) {
            v.reasons.push(format!("last {}", i + 1));
        }
        if let Some(w) = policy.within {
            if v.time >= w.before(newest) {
                v.reasons.push(format!("within {w}"));
            }
        }
    }
    let buckets: [(u32, &str, fn(&DateTime<Tz>) -> String); 5] = [
        (policy.hourly, "hourly", |t| {
            t.format("%Y-%m-%d %H:00").to_string()
        }),
        (policy.daily, "daily", |t| t.format("%Y-%m-%d").to_string()),
        (policy.weekly, "weekly", |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        (policy.monthly, "monthly", |t| t.format("%Y-%m").to_string()),
        (policy.yearly, "yearly", |t| t.format("%Y").to_string()),
    ];
    for (count, label, bucket_of) in buckets {
        let mut last: Option<String> = None;
        let mut kept = 0;
        for v in out.iter_mut() {
            if kept >= count {
                break;
            }
            let b = bucket_of(&v.time.with_timezone(tz));
            if last.as_ref() != Some(&b) {
                v.reasons.push(format!("{label} {b}"));
                kept += 1;
                last = Some(b);
            }
        }
    }
    out
}

/// Applies `policy` to every group (source name) of `snaps`: name → verdicts, newest first.
pub fn apply_grouped<Tz: TimeZone>(
    snaps: &[(Id, String, DateTime<FixedOffset>)],
    policy: &Policy,
    tz: &Tz,
) -> BTreeMap<String, Vec<Verdict>>
where
    Tz::Offset: std::fmt::Display,
{
    let mut groups: BTreeMap<String, Vec<(Id, DateTime<FixedOffset>)>> = BTreeMap::new();
    for (id, name, time) in snaps {
        groups.entry(name.clone()).or_default().push((*id, *time));
    }
    groups
        .into_iter()
        .map(|(name, s)| {
            let v = apply(&s, policy, tz);
            (name, v)
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    time: DateTime<chrono::Utc>,
    policy: Policy,
}

/// The policy stored in the repository, if any (the newest when several are).
///
/// # Errors
/// A damaged policy object; backend errors.
pub fn load_policy(backend: &dyn Backend, keys: &Keys) -> Result<Option<Policy>> {
    Ok(load_stored_policy(backend, keys)?.map(|(p, _)| p))
}

/// The newest stored policy and when it was stored.
///
/// # Errors
/// A damaged policy object; backend errors.
pub fn load_stored_policy(
    backend: &dyn Backend,
    keys: &Keys,
) -> Result<Option<(Policy, DateTime<chrono::Utc>)>> {
    let mut best: Option<StoredPolicy> = None;
    for o in backend.list("policy/")? {
        let bytes = match backend.read(&o.path) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let json = keys.open(&bytes, AAD, &|| o.path.clone())?;
        let p: StoredPolicy =
            serde_json::from_slice(&json).map_err(|e| Error::corrupt(&o.path, e.to_string()))?;
        if best.as_ref().is_none_or(|b| p.time > b.time) {
            best = Some(p);
        }
    }
    Ok(best.map(|b| (b.policy, b.time)))
}

/// Stores `policy` as the repository's default (then removes older ones).
///
/// # Errors
/// Backend errors.
pub fn save_policy(
    backend: &dyn Backend,
    keys: &Keys,
    policy: &Policy,
) -> Result<DateTime<chrono::Utc>> {
    let old = backend.list("policy/")?;
    let stored = StoredPolicy {
        time: chrono::Utc::now(),
        policy: *policy,
    };
    let json = serde_json::to_vec(&stored).map_err(|e| Error::Invalid(e.to_string()))?;
    let sealed = keys.seal(&json, AAD)?;
    let path = format!("policy/{}", Id::hash_of(&sealed));
    backend.create(&path, &sealed)?;
    for o in old {
        if o.path != path {
            backend.remove(&o.path)?;
        }
    }
    Ok(stored.time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("time")
    }

    #[test]
    fn spans_parse_and_print() {
        let s = Span::parse("1y6mo2d3h4min5s").expect("parse");
        assert_eq!(s.months, 18);
        assert_eq!(s.seconds, 2 * 86400 + 3 * 3600 + 4 * 60 + 5);
        assert_eq!(s.to_string(), "1y6mo2d3h4min5s");
        assert_eq!(Span::parse("2w").expect("w").to_string(), "14d");
        for bad in ["", "5", "m", "3m", "3x", "d3"] {
            let e = Span::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("invalid duration"), "{e}");
        }
        assert!(Span::parse("3m")
            .expect_err("m")
            .to_string()
            .contains("ambiguous"));
        // Calendar months: one month before March 31 is February's end.
        let one = Span::parse("1mo").expect("mo");
        assert_eq!(
            one.before(t("2024-03-31T12:00:00+00:00")),
            t("2024-02-29T12:00:00+00:00")
        );
    }

    #[test]
    fn newest_per_bucket_latest_always_kept() {
        let id = |n: u8| Id([n; 32]);
        let snaps = vec![
            (id(1), t("2026-11-20T01:00:00+00:00")),
            (id(2), t("2026-11-20T23:00:00+00:00")),
            (id(3), t("2026-11-21T02:00:00+00:00")),
            (id(4), t("2026-11-23T02:00:00+00:00")),
        ];
        let p = Policy {
            daily: 2,
            ..Default::default()
        };
        let v = apply(&snaps, &p, &chrono::Utc);
        let kept: Vec<(u8, Vec<String>)> =
            v.iter().map(|v| (v.id.0[0], v.reasons.clone())).collect();
        assert_eq!(
            kept,
            vec![
                (4, vec!["latest".into(), "daily 2026-11-23".into()]),
                (3, vec!["daily 2026-11-21".into()]),
                (2, vec![]),
                (1, vec![]),
            ]
        );
        let w = apply(&snaps, &Policy::default(), &chrono::Utc);
        assert_eq!(w.iter().filter(|v| !v.reasons.is_empty()).count(), 1);
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        let id = |n: u8| Id([n; 32]);
        let t = |s: &str| DateTime::parse_from_rfc3339(s).expect("time");
        let snaps = vec![
            (id(1), t("2026-11-20T10:05:00+00:00")),
            (id(2), t("2026-11-20T10:55:00+00:00")),
            (id(3), t("2026-11-20T11:10:00+00:00")),
            (id(4), t("2026-11-20T11:20:00+00:00")),
            (id(5), t("2026-11-20T12:00:10+00:00")),
        ];
        let p = Policy {
            hourly: 2,
            ..Default::default()
        };
        let kept: Vec<u8> = apply(&snaps, &p, &chrono::Utc)
            .iter()
            .filter(|v| !v.reasons.is_empty())
            .map(|v| v.id.0[0])
            .collect();
        assert_eq!(kept, vec![5, 4]);
        // Stored without the field when it is zero: older readers see the same policy.
        let json = serde_json::to_string(&Policy {
            daily: 1,
            ..Default::default()
        })
        .expect("json");
        assert!(!json.contains("hourly"), "{json}");
    }

    #[test]
    fn continuous_compaction_keeps_an_hour_then_hours_then_days() {
        // Three days of snapshots every 10 s.
        let start = DateTime::parse_from_rfc3339("2026-11-20T00:00:00+00:00").expect("time");
        let snaps: Vec<(Id, DateTime<FixedOffset>)> = (0..3 * 8640u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (Id(id), start + chrono::Duration::seconds(i64::from(i) * 10))
            })
            .collect();
        let p = Policy::default().continuous();
        assert_eq!((p.daily, p.weekly, p.monthly, p.hourly), (7, 4, 12, 24));
        let kept = apply(&snaps, &p, &chrono::Utc)
            .into_iter()
            .filter(|v| !v.reasons.is_empty())
            .count();
        // 360 in the last hour, the newest of the 23 hours before, of the 2 days before.
        assert_eq!(kept, 360 + 23 + 2, "kept {kept}");
        // A policy's own rules stay.
        let own = Policy {
            daily: 30,
            within: Some(Span::parse("2h").expect("span")),
            ..Default::default()
        }
        .continuous();
        assert_eq!((own.daily, own.weekly, own.hourly), (30, 0, 24));
        assert_eq!(own.within, Some(Span::parse("2h").expect("span")));
    }
}
