//! Times as operators have them: one parser for every option that takes a time
//! (`--time`, `--target-time`, a snapshot picked by time).
//!
//! Accepted: RFC 3339 (`2026-12-07T05:59:14+01:00`); PostgreSQL's ISO output, as `SELECT
//! now()` and the server log print it (`2026-12-07 05:59:14.609899+00`, `+05:30`, `+0530`,
//! ` UTC`, ` GMT`, `Z`); its `Postgres` date style (`Mon Dec 07 05:59:14.609899 2026 UTC`);
//! and a time without a zone, read in the machine's local zone (`TZ` honoured), to the
//! minute or the second, with or without fractions.

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

use crate::{Error, Result};

/// Splits a trailing zone off `t`: (the rest, its offset in seconds east), `None` when
/// there is none.
fn split_zone(t: &str) -> (&str, Option<i32>) {
    let t = t.trim();
    for z in [" UTC", " GMT", "Z", "z", "+00:00"] {
        if let Some(rest) = t.strip_suffix(z) {
            if !rest.is_empty() {
                return (rest.trim_end(), Some(0));
            }
        }
    }
    // A numeric offset: ±HH, ±HHMM or ±HH:MM after the time of day (past its last ':'
    // or digit run), never the date's own '-'.
    let Some(pos) = t.rfind(['+', '-']) else {
        return (t, None);
    };
    let (rest, zone) = t.split_at(pos);
    if !rest.contains(':') {
        return (t, None);
    }
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (t, None);
    }
    let (h, m) = match digits.len() {
        2 => (&digits[..2], "0"),
        4 => (&digits[..2], &digits[2..]),
        _ => return (t, None),
    };
    match (h.parse::<i32>(), m.parse::<i32>()) {
        (Ok(h), Ok(m)) if h <= 15 && m < 60 => (rest.trim_end(), Some(sign * (h * 3600 + m * 60))),
        _ => (t, None),
    }
}

/// Parses a time (see the module docs).
///
/// # Errors
/// [`Error::Invalid`] naming the accepted forms.
pub fn parse_time(t: &str) -> Result<DateTime<FixedOffset>> {
    if let Ok(x) = DateTime::parse_from_rfc3339(t.trim()) {
        return Ok(x);
    }
    let (clock, zone) = split_zone(t);
    let naive = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%a %b %d %H:%M:%S%.f %Y",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(clock, f).ok())
    // A day alone is its midnight (`--since 2026-12-07`).
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(clock.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    let found = naive.and_then(|n| match zone {
        Some(secs) => FixedOffset::east_opt(secs).and_then(|z| z.from_local_datetime(&n).single()),
        None => Local
            .from_local_datetime(&n)
            .earliest()
            .map(|x| x.fixed_offset()),
    });
    found.ok_or_else(|| {
        Error::Invalid(format!(
            "{t:?} is not a time: use RFC 3339 (2026-12-01T14:31:00+01:00), PostgreSQL's form (2026-12-01 14:31:00.123456+00, as SELECT now() prints it), local time (\"2026-12-01 14:31\"), or a day (2026-12-01, its midnight)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(t: &str) -> String {
        parse_time(t)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string()
    }

    #[test]
    fn postgres_output_and_rfc3339_mean_the_same_instant() {
        let want = "2026-12-07 05:59:14.609899";
        for t in [
            "2026-12-07 05:59:14.609899+00",
            "2026-12-07 05:59:14.609899+00:00",
            "2026-12-07T05:59:14.609899Z",
            "2026-12-07 05:59:14.609899 UTC",
            "2026-12-07 06:59:14.609899+01",
            "2026-12-07 06:59:14.609899+0100",
            "2026-12-07 00:29:14.609899-05:30",
            "Mon Dec 07 05:59:14.609899 2026 UTC",
        ] {
            assert_eq!(utc(t), want, "{t}");
        }
        assert_eq!(utc("2026-12-07 05:59:14+00"), "2026-12-07 05:59:14.000000");
        assert_eq!(utc("2026-12-07 05:59Z"), "2026-12-07 05:59:00.000000");
    }

    #[test]
    fn a_time_without_a_zone_is_local_and_nonsense_is_refused() {
        let t = parse_time("2026-12-07 05:59").expect("local");
        assert_eq!(t.format("%H:%M").to_string(), "05:59");
        for bad in [
            "",
            "yesterday",
            "2026-13-01 00:00",
            "2026-12-07 05:59+99",
            "12:00",
        ] {
            let e = parse_time(bad).expect_err(bad).to_string();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
    }
}
