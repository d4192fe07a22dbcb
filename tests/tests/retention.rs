//! Retention checked against an independent model: calendar buckets come from GNU `date`
//! (glibc's time zone code, not chrono's), and the selection is written differently (per
//! bucket the newest snapshot; the N newest buckets). Random snapshot times spanning three
//! years cluster around daylight-saving changes, ISO week 53 (2026), month ends and the
//! 2024 leap day, with several snapshots some days and none on others, in two sources.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use dbvault_tests::{random_bytes, sh, Repo};

struct Snap {
    id: String,
    name: String,
    epoch: i64,
}

/// Instants (UTC epoch seconds) where calendars are tricky.
fn anchors() -> Vec<i64> {
    let t = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("anchor")
            .timestamp()
    };
    vec![
        t("2024-02-29T12:00:00Z"), // leap day
        t("2024-03-10T07:00:00Z"), // New York spring forward
        t("2024-03-31T01:00:00Z"), // Berlin spring forward, month end
        t("2024-10-27T01:00:00Z"), // Berlin fall back
        t("2024-11-03T06:00:00Z"), // New York fall back
        t("2024-12-30T00:00:00Z"), // ISO week 1 of 2025 starts in 2024
        t("2025-03-09T07:00:00Z"),
        t("2025-11-02T06:00:00Z"),
        t("2025-12-31T23:00:00Z"), // year end
        t("2026-03-08T07:00:00Z"),
        t("2026-03-29T01:00:00Z"),
        t("2026-04-30T22:30:00Z"), // month end in Berlin, not in New York
        t("2026-10-25T01:00:00Z"),
        t("2026-11-01T06:00:00Z"),
        t("2026-12-31T12:00:00Z"), // ISO week 53 of 2026
        t("2027-01-03T12:00:00Z"), // still 2026-W53
        t("2027-01-04T12:00:00Z"), // 2027-W01
    ]
}

/// Buckets per epoch in `tz`, from GNU date: (day, iso week, month, year).
fn buckets(tz: &str, epochs: &[i64]) -> Vec<[String; 4]> {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("times");
    let lines: String = epochs.iter().map(|e| format!("@{e}\n")).collect();
    std::fs::write(&f, lines).expect("write");
    let out = sh(
        &format!("date -f {} '+%F %G-W%V %Y-%m %Y'", f.display()),
        &[("TZ", tz)],
    )
    .ok();
    out.text()
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            [v[0].into(), v[1].into(), v[2].into(), v[3].into()]
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Rules {
    last: usize,
    daily: usize,
    weekly: usize,
    monthly: usize,
    yearly: usize,
    within_h: Option<i64>,
}

/// The model: id -> reasons (empty: forget).
fn model(snaps: &[Snap], tz: &str, r: Rules) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let names: BTreeSet<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    for name in names {
        let mut g: Vec<&Snap> = snaps.iter().filter(|s| s.name == name).collect();
        // Newest first; equal times by id, newest id first.
        g.sort_by(|a, b| b.epoch.cmp(&a.epoch).then(b.id.cmp(&a.id)));
        let bk = buckets(tz, &g.iter().map(|s| s.epoch).collect::<Vec<_>>());
        for s in &g {
            out.insert(s.id.clone(), BTreeSet::new());
        }
        out.get_mut(&g[0].id)
            .expect("newest")
            .insert("latest".into());
        for (i, s) in g.iter().enumerate().take(r.last) {
            out.get_mut(&s.id)
                .expect("s")
                .insert(format!("last {}", i + 1));
        }
        if let Some(h) = r.within_h {
            for s in &g {
                if s.epoch >= g[0].epoch - h * 3600 {
                    out.get_mut(&s.id).expect("s").insert("within".into());
                }
            }
        }
        for (k, (label, n)) in [
            ("daily", r.daily),
            ("weekly", r.weekly),
            ("monthly", r.monthly),
            ("yearly", r.yearly),
        ]
        .into_iter()
        .enumerate()
        {
            // Newest snapshot of every bucket (the first met, newest first); then the n
            // greatest bucket keys (keys sort chronologically).
            let mut newest: BTreeMap<&str, &Snap> = BTreeMap::new();
            for (s, b) in g.iter().zip(&bk) {
                newest.entry(b[k].as_str()).or_insert(s);
            }
            for (key, s) in newest.iter().rev().take(n) {
                out.get_mut(&s.id)
                    .expect("s")
                    .insert(format!("{label} {key}"));
            }
        }
    }
    out
}

fn forget_json(repo: &Repo, tz: &str, r: Rules, dry: bool) -> BTreeMap<String, BTreeSet<String>> {
    let mut args: Vec<String> = vec!["forget".into(), "--json".into()];
    if dry {
        args.push("--dry-run".into());
    }
    for (flag, n) in [
        ("--keep-last", r.last),
        ("--keep-daily", r.daily),
        ("--keep-weekly", r.weekly),
        ("--keep-monthly", r.monthly),
        ("--keep-yearly", r.yearly),
    ] {
        if n > 0 {
            args.push(flag.into());
            args.push(n.to_string());
        }
    }
    if let Some(h) = r.within_h {
        args.push("--keep-within".into());
        args.push(format!("{h}h"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = repo.cmd(&argv);
    c.env("TZ", tz);
    let v = dbvault_tests::run_cmd(c, None).ok().json();
    let mut out = BTreeMap::new();
    for k in v["keep"].as_array().expect("keep") {
        let reasons = k["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .map(|x| {
                let s = x.as_str().expect("str");
                // `within 36h` and `within 1d12h` name the same rule; the model says `within`.
                if s.starts_with("within ") {
                    "within".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        out.insert(k["id"].as_str().expect("id").to_string(), reasons);
    }
    for f in v["forget"].as_array().expect("forget") {
        assert!(f.get("reasons").is_none());
        out.insert(f["id"].as_str().expect("id").to_string(), BTreeSet::new());
    }
    out
}

#[test]
fn retention_matches_an_independent_model() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    eprintln!("retention seed: {seed}");
    let rnd = random_bytes(8 * 4096, seed);
    let mut at = 0usize;
    let mut next = move |n: u64| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rnd[at * 8..at * 8 + 8]);
        at += 1;
        u64::from_le_bytes(b) % n
    };
    let repo = Repo::new();
    let anchors = anchors();
    let (start, end) = (
        anchors[0] - 90 * 86400,
        anchors[anchors.len() - 1] + 40 * 86400,
    );
    let mut snaps = Vec::new();
    let mut epochs = Vec::new();
    for i in 0..140 {
        let epoch = match next(4) {
            // Anywhere in the three years.
            0 => start + next((end - start) as u64) as i64,
            // A burst: several on one day near an anchor.
            1 if i > 0 => epochs[i - 1] + next(5 * 3600) as i64,
            // Within a day and a half of a tricky instant.
            _ => anchors[next(anchors.len() as u64) as usize] + next(3 * 86400) as i64 - 36 * 3600,
        };
        epochs.push(epoch);
    }
    // A few exact duplicates of a time: ties are broken by id.
    epochs[4] = epochs[1];
    epochs[53] = epochs[50];
    for (i, epoch) in epochs.iter().enumerate() {
        let name = if i % 3 == 0 { "billing" } else { "shop" };
        let t = chrono::DateTime::from_timestamp(*epoch, 0).expect("t");
        let data = format!("snapshot {i}\n");
        let v = repo.backup(
            data.as_bytes(),
            &["--name", name, "--time", &t.to_rfc3339()],
        );
        snaps.push(Snap {
            id: v["snapshot_id"].as_str().expect("id").to_string(),
            name: name.into(),
            epoch: *epoch,
        });
    }
    let zones = [
        "America/New_York",
        "Europe/Berlin",
        "UTC",
        "Australia/Lord_Howe",
    ];
    for round in 0..10 {
        let r = Rules {
            last: next(4) as usize * usize::from(next(2) == 0),
            daily: next(12) as usize,
            weekly: next(8) as usize,
            monthly: next(15) as usize,
            yearly: next(4) as usize,
            within_h: (next(3) == 0).then(|| 1 + next(24 * 20) as i64),
        };
        let tz = zones[round % zones.len()];
        let want = model(&snaps, tz, r);
        let got = forget_json(&repo, tz, r, true);
        assert_eq!(
            got, want,
            "round {round}, TZ={tz}, rules {r:?}, seed {seed}"
        );
    }
    // For real: exactly the model's keep set remains, and every kept snapshot restores.
    let r = Rules {
        last: 2,
        daily: 7,
        weekly: 4,
        monthly: 12,
        yearly: 0,
        within_h: None,
    };
    let want = model(&snaps, "Europe/Berlin", r);
    forget_json(&repo, "Europe/Berlin", r, false);
    let left: BTreeSet<String> = repo.snapshot_ids().into_iter().collect();
    let kept: BTreeSet<String> = want
        .iter()
        .filter(|(_, why)| !why.is_empty())
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(left, kept);
    for id in &left {
        let i = snaps.iter().position(|s| &s.id == id).expect("known");
        assert_eq!(
            repo.restore(id).ok().stdout,
            format!("snapshot {i}\n").into_bytes()
        );
    }
}

#[test]
fn stored_policy_is_used_and_bad_rules_are_refused() {
    let repo = Repo::uninit();
    repo.run(&["init", "--keep-daily", "2"], None).ok();
    for d in 1..=4 {
        let t = format!("2026-11-0{d}T03:00:00+00:00");
        repo.backup(b"x", &["--time", &t]);
    }
    let v = repo
        .run(&["forget", "--dry-run", "--json"], None)
        .ok()
        .json();
    assert_eq!(v["keep"].as_array().expect("keep").len(), 2);
    assert_eq!(v["forget"].as_array().expect("forget").len(), 2);
    // `policy` replaces it; flags given to forget override it.
    repo.run(&["policy", "--keep-last", "3"], None).ok();
    let shown = repo.run(&["policy"], None).ok().text();
    assert!(shown.contains("--keep-last 3"), "{shown}");
    let v = repo
        .run(&["forget", "--dry-run", "--json"], None)
        .ok()
        .json();
    assert_eq!(v["keep"].as_array().expect("keep").len(), 3);
    let v = repo
        .run(&["forget", "--dry-run", "--json", "--keep-last", "1"], None)
        .ok()
        .json();
    assert_eq!(v["keep"].as_array().expect("keep").len(), 1);
    for (args, msg) in [
        (vec!["forget", "--keep-within", "3m"], "ambiguous"),
        (vec!["forget", "--keep-within", "3"], "unit is missing"),
        (vec!["forget", "--keep-daily", "0"], "every rule is zero"),
        (vec!["forget", "--keep-daily", "x"], "invalid value"),
    ] {
        let before = repo.snapshot_ids();
        let r = repo.run(&args, None);
        assert_ne!(r.code, Some(0), "{args:?}");
        assert!(r.stderr.contains(msg), "{args:?}: {}", r.stderr);
        assert_eq!(repo.snapshot_ids(), before);
    }
    let empty = Repo::new();
    let r = empty.run(&["forget"], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no retention rules"), "{}", r.stderr);
}
