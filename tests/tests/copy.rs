//! `dbvault copy`: snapshots into a second repository (local → S3 and back), re-encrypted
//! under the target's passphrase, never copied twice, resumable after a kill; and `run`
//! keeping an offsite copy through `copy_to`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbvault_core::backend::s3::{S3Backend, S3Options};
use dbvault_core::backend::Backend;
use dbvault_tests::garage::Garage;
use dbvault_tests::{dump_like, random_bytes, run_cmd, PgDb, Repo, Run};

const OFFSITE_PASSWORD: &str = "a different passphrase offsite";

/// A dbvault command on the S3 repository `prefix`, opened with the offsite passphrase.
fn offsite(g: &Garage, prefix: &str, args: &[&str]) -> Command {
    let mut c = g.dbvault(&g.endpoint, prefix, args);
    c.env("DBVAULT_PASSWORD", OFFSITE_PASSWORD);
    c
}

/// `copy` from the local repository `from` into `to_url`.
fn copy_cmd(g: &Garage, from: &Repo, to_url: &str, extra: &[&str]) -> Command {
    let mut c = from.cmd(&["--s3-path-style", "copy", "--to-repo", to_url]);
    c.args(extra).env("DBVAULT_TO_PASSWORD", OFFSITE_PASSWORD);
    for (k, v) in g.env() {
        c.env(k, v);
    }
    c
}

fn snapshot_count(r: &Run) -> usize {
    r.json().as_array().map_or(0, Vec::len)
}

fn copied(r: &Run) -> (u64, u64, u64) {
    let v = r.json();
    (
        v["copied"].as_u64().expect("copied"),
        v["present"].as_u64().expect("present"),
        v["bytes_added"].as_u64().expect("bytes_added"),
    )
}

#[test]
fn copies_go_to_s3_and_back_byte_identical_and_never_twice() {
    let g = Garage::start();
    let local = Repo::new();
    let raw = random_bytes(3 << 20, 41);
    let text = dump_like(4 << 20, 42);
    local.backup(&raw, &["--name", "raw"]);
    local.backup(&text, &["--name", "text"]);
    let mut text2 = text.clone();
    text2.extend_from_slice(&dump_like(200_000, 43));
    local.backup(&text2, &["--name", "text"]);
    let src = PgDb::new("copysrc");
    src.load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hard.sql"));
    local
        .run(&["backup", &src.url(), "--name", "pg"], None)
        .ok();
    run_cmd(offsite(&g, "off", &["init"]), None).ok();

    let first = run_cmd(copy_cmd(&g, &local, &g.url("off"), &["--json"]), None).ok();
    let (n, present, added) = copied(&first);
    assert_eq!((n, present), (4, 0), "{}", first.text());
    // Deduplicated within the target: the second `text` night costs its new tail, not 4 MiB.
    let nights: Vec<u64> = first.json()["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .filter(|s| s["name"] == "text")
        .map(|s| s["bytes_added"].as_u64().expect("bytes"))
        .collect();
    assert_eq!(nights.len(), 2);
    assert!(
        nights[1] < 400_000,
        "the second copy of text added {nights:?}"
    );
    // And it costs what the source's own storage does (same chunks, same compression).
    let here = local.run(&["stats", "--json"], None).ok().json()["stored_bytes"]
        .as_u64()
        .expect("stored");
    assert!(
        added > here * 9 / 10 && added < here * 11 / 10,
        "the copy added {added} bytes; the source stores {here}"
    );

    // Each copy restores byte-identically, opened with the target's passphrase only.
    let restore = |name: &str| {
        run_cmd(
            offsite(
                &g,
                "off",
                &["restore", "latest", "--name", name, "--to", "-"],
            ),
            None,
        )
        .ok()
        .stdout
    };
    assert!(restore("raw") == raw, "raw differs after the copy");
    assert!(restore("text") == text2, "text differs after the copy");
    let dst = PgDb::new("copydst");
    run_cmd(
        offsite(
            &g,
            "off",
            &["restore", "latest", "--name", "pg", "--to", &dst.url()],
        ),
        None,
    )
    .ok();
    assert_eq!(src.fingerprint(), dst.fingerprint(), "the database differs");
    // The local passphrase does not open the copy: it was re-encrypted.
    let wrong = run_cmd(g.dbvault(&g.endpoint, "off", &["snapshots"]), None);
    assert_ne!(
        wrong.code,
        Some(0),
        "the source passphrase opened the target"
    );
    // ls of a copy is the original's.
    let ls = |r: Run| r.ok().json()["entries"].clone();
    assert_eq!(
        ls(local.run(&["ls", "latest", "--name", "pg", "--json"], None)),
        ls(run_cmd(
            offsite(&g, "off", &["ls", "latest", "--name", "pg", "--json"]),
            None
        )),
    );

    // Again: nothing copied, nothing stored.
    let again = run_cmd(copy_cmd(&g, &local, &g.url("off"), &["--json"]), None).ok();
    assert_eq!(copied(&again), (0, 4, 0), "{}", again.text());
    let listed = run_cmd(offsite(&g, "off", &["snapshots", "--json"]), None).ok();
    assert_eq!(snapshot_count(&listed), 4);

    // Back from S3 into a new local repository, then S3 again: still never twice.
    let back = Repo::new();
    let mut c = offsite(&g, "off", &["copy", "--to-repo"]);
    c.arg(&back.path)
        .env("DBVAULT_TO_PASSWORD", dbvault_tests::PASSWORD);
    let home = run_cmd(c, None).ok();
    assert!(
        home.text().contains("4 snapshot(s) copied"),
        "{}",
        home.text()
    );
    let out = back
        .run(&["restore", "latest", "--name", "text", "--to", "-"], None)
        .ok();
    assert!(out.stdout == text2, "text differs after S3 -> local");
    back.run(&["check", "--read-data"], None).ok();
    let circle = run_cmd(copy_cmd(&g, &back, &g.url("off"), &["--json"]), None).ok();
    assert_eq!(copied(&circle), (0, 4, 0), "{}", circle.text());
    // One snapshot by name and id.
    let one = run_cmd(
        copy_cmd(&g, &local, &g.url("off"), &["latest", "--name", "raw"]),
        None,
    )
    .ok();
    assert!(
        one.text().contains("0 snapshot(s) copied, 1 already"),
        "{}",
        one.text()
    );
}

fn s3(g: &Garage, prefix: &str) -> S3Backend {
    let o = S3Options {
        endpoint: Some(g.endpoint.clone()),
        region: Some("garage".into()),
        path_style: true,
        credentials: Some((g.key_id.clone(), g.secret.clone())),
        attempt_timeout: None,
        spool_dir: None,
    };
    S3Backend::new(&g.url(prefix), &o).expect("backend")
}

#[test]
fn a_copy_killed_midway_completes_when_run_again_without_duplicates() {
    let g = Garage::start();
    let local = Repo::new();
    let small = random_bytes(500_000, 51);
    let big = random_bytes(96 << 20, 52);
    let last = random_bytes(700_000, 53);
    local.backup(&small, &["--name", "a"]);
    local.backup(&big, &["--name", "b"]);
    local.backup(&last, &["--name", "c"]);
    run_cmd(offsite(&g, "kill", &["init"]), None).ok();
    let store = s3(&g, "kill");

    let mut child = copy_cmd(&g, &local, &g.url("kill"), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn copy");
    let t0 = Instant::now();
    loop {
        let n = store.list("snapshots/").expect("list").len();
        if n >= 1 {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "copy ended before the first snapshot was seen"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no snapshot copied"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let after_kill = store.list("snapshots/").expect("list").len();
    assert!(
        after_kill < 3,
        "the copy finished before it was killed; make the big snapshot bigger"
    );

    let rerun = run_cmd(copy_cmd(&g, &local, &g.url("kill"), &["--json"]), None).ok();
    let (n, present, _) = copied(&rerun);
    assert_eq!(
        (n + present, present as usize),
        (3, after_kill),
        "{}",
        rerun.text()
    );
    let listed = run_cmd(offsite(&g, "kill", &["snapshots", "--json"]), None).ok();
    assert_eq!(snapshot_count(&listed), 3, "a snapshot was copied twice");
    for (name, data) in [("a", &small), ("b", &big), ("c", &last)] {
        let out = run_cmd(
            offsite(
                &g,
                "kill",
                &["restore", "latest", "--name", name, "--to", "-"],
            ),
            None,
        )
        .ok();
        assert!(out.stdout == *data, "{name} differs after the resumed copy");
    }
    run_cmd(offsite(&g, "kill", &["check", "--read-data"]), None).ok();
    // What the kill left unreferenced goes with prune; then the copy costs what the data does.
    run_cmd(offsite(&g, "kill", &["prune"]), None).ok();
    let stats = run_cmd(offsite(&g, "kill", &["stats", "--json"]), None)
        .ok()
        .json();
    let stored = stats["stored_bytes"].as_u64().expect("stored");
    let data = (small.len() + big.len() + last.len()) as u64;
    assert!(
        stored < data + data / 20,
        "the target stores {stored} bytes for {data} bytes of snapshots"
    );
    let again = run_cmd(copy_cmd(&g, &local, &g.url("kill"), &["--json"]), None).ok();
    assert_eq!(copied(&again), (0, 3, 0));
}

#[test]
fn run_keeps_an_offsite_copy_with_the_same_retention() {
    let g = Garage::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);")
        .expect("schema");
    let pw_main = dir.path().join("pw-main");
    let pw_off = dir.path().join("pw-off");
    std::fs::write(&pw_main, dbvault_tests::PASSWORD).expect("pw");
    std::fs::write(&pw_off, OFFSITE_PASSWORD).expect("pw");
    let main = dir.path().join("main");
    let cfg = dir.path().join("dbvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = {:?}\npassword_file = {:?}\ncopy_to = \"offsite\"\n\n\
             [repository.offsite]\nurl = {:?}\npassword_file = {:?}\ns3_endpoint = {:?}\n\
             s3_region = \"garage\"\ns3_path_style = true\n\n\
             [retention]\nkeep_last = 2\n\n\
             [[source]]\nname = \"app\"\nsqlite = {:?}\n",
            main.display().to_string(),
            pw_main.display().to_string(),
            g.url("run-off"),
            pw_off.display().to_string(),
            g.endpoint,
            db.display().to_string(),
        ),
    )
    .expect("config");
    let base = |args: &[&str]| {
        let mut c = Command::new(dbvault_tests::bin());
        c.args(args)
            .env_remove("DBVAULT_PASSWORD")
            .env_remove("DBVAULT_REPO")
            .env("DBVAULT_CACHE_DIR", dir.path().join("cache"));
        for (k, v) in g.env() {
            c.env(k, v);
        }
        c
    };
    let mut init = base(&["init", "--repo"]);
    init.arg(&main)
        .env("DBVAULT_PASSWORD", dbvault_tests::PASSWORD);
    run_cmd(init, None).ok();
    let mut init = base(&["--s3-path-style", "init", "--repo", &g.url("run-off")]);
    init.env("DBVAULT_PASSWORD", OFFSITE_PASSWORD);
    run_cmd(init, None).ok();

    for night in 0..3 {
        conn.execute(
            "INSERT INTO t (v) VALUES (?1)",
            [format!("night {night} {}", "x".repeat(5000))],
        )
        .expect("insert");
        let mut run = base(&["run", "--config"]);
        run.arg(&cfg);
        let out = run_cmd(run, None).ok();
        assert!(
            out.text()
                .contains("copy to offsite on main: 1 snapshot(s) copied"),
            "{}",
            out.text()
        );
    }
    // The offsite copy kept the same retention (2) and holds tonight's database.
    let mut list = base(&[
        "--s3-path-style",
        "snapshots",
        "--json",
        "--repo",
        &g.url("run-off"),
    ]);
    list.env("DBVAULT_PASSWORD", OFFSITE_PASSWORD);
    assert_eq!(snapshot_count(&run_cmd(list, None).ok()), 2);
    let out = dir.path().join("back.db");
    let mut restore = base(&[
        "--s3-path-style",
        "restore",
        "latest",
        "--repo",
        &g.url("run-off"),
    ]);
    restore
        .arg("--to")
        .arg(format!("sqlite:{}", out.display()))
        .env("DBVAULT_PASSWORD", OFFSITE_PASSWORD);
    run_cmd(restore, None).ok();
    let back = rusqlite::Connection::open(&out).expect("open copy");
    let n: i64 = back
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 3, "the offsite copy is not tonight's database");
}

/// Two S3 repositories with keys of their own, each allowed on its own bucket only, named
/// in the configuration file (an environment file and an AWS credentials file with a
/// profile): `run` backs up into one and copies offsite into the other with no AWS
/// variable in its environment, and the offsite copy restores.
#[test]
fn each_configured_repository_uses_its_own_s3_keys() {
    let g = Garage::start();
    let (off_id, off_secret) = g.another_bucket("offsite-bucket");
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let main_creds = d.join("main.env");
    std::fs::write(
        &main_creds,
        format!(
            "# main bucket\nexport AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY=\"{}\"\n",
            g.key_id, g.secret
        ),
    )
    .expect("creds");
    let off_creds = d.join("aws-credentials");
    std::fs::write(
        &off_creds,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[offsite]\naws_access_key_id = {off_id}\naws_secret_access_key = {off_secret}\n"
        ),
    )
    .expect("creds");
    for f in [&main_creds, &off_creds] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let pw = d.join("pw");
    std::fs::write(&pw, format!("{}\n", dbvault_tests::PASSWORD)).expect("pw");
    let db = d.join("app.db");
    dbvault_tests::sqlite3(
        &db,
        "CREATE TABLE t (a int, b text); INSERT INTO t SELECT value, hex(randomblob(20)) FROM generate_series(1, 2000);",
    );
    let cfg = d.join("dbvault.toml");
    let repo = |name: &str, bucket: &str, creds: &Path, extra: &str| {
        format!(
            "[repository.{name}]\nurl = \"s3://{bucket}/r\"\npassword_file = \"{}\"\ns3_endpoint = \"{}\"\ns3_region = \"garage\"\ns3_path_style = true\ns3_credentials_file = \"{}\"\n{extra}\n",
            pw.display(),
            g.endpoint,
            creds.display()
        )
    };
    std::fs::write(
        &cfg,
        format!(
            "{}{}[[source]]\nname = \"app\"\nsqlite = \"{}\"\nrepository = \"main\"\n",
            repo("main", &g.bucket, &main_creds, "copy_to = \"offsite\""),
            repo(
                "offsite",
                "offsite-bucket",
                &off_creds,
                "s3_profile = \"offsite\""
            ),
            db.display()
        ),
    )
    .expect("config");
    // The repositories are made with each bucket's own key, the way an admin would.
    for (bucket, id, secret) in [
        (g.bucket.as_str(), g.key_id.as_str(), g.secret.as_str()),
        ("offsite-bucket", off_id.as_str(), off_secret.as_str()),
    ] {
        let mut c = Command::new(dbvault_tests::bin());
        c.args([
            "--s3-path-style",
            "--repo",
            &format!("s3://{bucket}/r"),
            "init",
        ])
        .env("DBVAULT_PASSWORD", dbvault_tests::PASSWORD)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "garage")
        .env("AWS_ENDPOINT_URL", &g.endpoint);
        run_cmd(c, None).ok();
    }
    // The run: no AWS variable, no profile in its environment.
    let mut c = Command::new(dbvault_tests::bin());
    c.arg("--config").arg(&cfg).args(["run", "--json"]);
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_PROFILE",
        "DBVAULT_PASSWORD",
        "DBVAULT_REPO",
    ] {
        c.env_remove(k);
    }
    c.env("HOME", d).env("DBVAULT_CACHE_DIR", d.join("cache"));
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.text());
    let night = r.json();
    let copy = night["maintenance"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"].as_str().is_some_and(|w| w.starts_with("copy to")))
        .unwrap_or_else(|| panic!("no copy step: {night}"));
    assert_eq!(copy["ok"], true, "{night}");
    // The offsite copy restores, with the offsite key.
    let out = d.join("back.db");
    let mut c = Command::new(dbvault_tests::bin());
    c.args(["--s3-path-style", "--repo", "s3://offsite-bucket/r"])
        .args(["restore", "latest", "--name", "app", "--to"])
        .arg(format!("sqlite:{}", out.display()))
        .env("DBVAULT_PASSWORD", dbvault_tests::PASSWORD)
        .env("DBVAULT_CACHE_DIR", d.join("cache2"))
        .env("AWS_ACCESS_KEY_ID", &off_id)
        .env("AWS_SECRET_ACCESS_KEY", &off_secret)
        .env("AWS_REGION", "garage")
        .env("AWS_ENDPOINT_URL", &g.endpoint);
    run_cmd(c, None).ok();
    assert_eq!(
        dbvault_tests::sqlite3(&out, "SELECT count(*), sum(a) FROM t").trim(),
        dbvault_tests::sqlite3(&db, "SELECT count(*), sum(a) FROM t").trim()
    );
    // A credentials file others can read is used, with a warning; one without the keys
    // is a one-line error naming the file and line.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&main_creds, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let mut c = Command::new(dbvault_tests::bin());
    c.arg("--config").arg(&cfg).args(["status"]);
    c.env("DBVAULT_CACHE_DIR", d.join("cache"));
    let r = run_cmd(c, None);
    assert!(
        r.stderr
            .contains("can be read by other users: chmod 600 it"),
        "{}",
        r.stderr
    );
    std::fs::write(&off_creds, "[default]\naws_access_key_id = x\n").expect("creds");
    // A bad offsite credentials file fails the copy, not tonight's local backup.
    let mut c = Command::new(dbvault_tests::bin());
    c.arg("--config").arg(&cfg).args(["run", "--json"]);
    c.env("DBVAULT_CACHE_DIR", d.join("cache"));
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let night = r.json();
    assert_eq!(night["sources"][0]["ok"], true, "{night}");
    let text = night.to_string();
    assert!(
        text.contains("has no section [offsite] (its sections: default)"),
        "{night}"
    );
    // The dry run says so too, and exits 1.
    let mut c = Command::new(dbvault_tests::bin());
    c.arg("--config").arg(&cfg).args(["run", "--dry-run"]);
    c.env("DBVAULT_CACHE_DIR", d.join("cache"));
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.text().contains("has no section [offsite]"),
        "{}",
        r.text()
    );
}
