//! `run` and `status` from a configuration file: two PostgreSQL databases and an SQLite
//! file backed up, retention applied, metrics written; a source that is down fails the run
//! while the others still get their snapshots; config errors name file and line.

use std::path::Path;

use dbvault_tests::{bin, run_cmd, sqlite3_dump, PgDb, Run, PASSWORD};

fn dbvault(config: &Path, args: &[&str]) -> Run {
    let mut c = std::process::Command::new(bin());
    c.arg("--config").arg(config).args(args);
    c.env_remove("DBVAULT_PASSWORD")
        .env_remove("DBVAULT_REPO")
        .env_remove("DBVAULT_PASSWORD_FILE");
    run_cmd(c, None)
}

fn write_config(dir: &Path, sources: &str) -> std::path::PathBuf {
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("pw");
    let cfg = dir.join("dbvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[retention]\nkeep_last = 2\n\n\
             [check]\nread_data_subset = \"50%\"\n\n[prune]\n\n[metrics]\ntextfile = \"{}\"\n\n{sources}",
            dir.join("repo").display(),
            pw.display(),
            dir.join("dbvault.prom").display()
        ),
    )
    .expect("config");
    cfg
}

fn snapshots(dir: &Path, name: &str) -> Vec<String> {
    let mut c = std::process::Command::new(bin());
    c.args(["--repo"])
        .arg(dir.join("repo"))
        .args(["snapshots", "--json", "--name", name])
        .env("DBVAULT_PASSWORD", PASSWORD);
    run_cmd(c, None)
        .ok()
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn run_backs_up_every_source_applies_retention_and_status_reports() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let mut c = std::process::Command::new(bin());
    c.arg("--repo")
        .arg(d.join("repo"))
        .arg("init")
        .env("DBVAULT_PASSWORD", PASSWORD);
    run_cmd(c, None).ok();
    let (a, b) = (PgDb::new("runa"), PgDb::new("runb"));
    a.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;");
    b.sql("CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u SELECT generate_series(1, 300);");
    let db = d.join("app.db");
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute_batch("CREATE TABLE x (a TEXT); INSERT INTO x VALUES ('one'), ('two');")
        .expect("sqlite");
    let sources = format!(
        "[[source]]\nname = \"a\"\npostgres = \"{}\"\n\n[[source]]\nname = \"b\"\npostgres = \"{}\"\n\n\
         [[source]]\nname = \"app\"\nsqlite = \"{}\"\n",
        a.url(),
        b.url(),
        db.display()
    );
    let cfg = write_config(d, &sources);
    for round in 0..3 {
        let r = dbvault(&cfg, &["run", "--json"]);
        assert_eq!(r.code, Some(0), "round {round}: {}", r.stderr);
        let v = r.json();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["sources"].as_array().expect("s").len(), 3);
    }
    // keep_last = 2: three runs leave two snapshots per source.
    for name in ["a", "b", "app"] {
        assert_eq!(snapshots(d, name).len(), 2, "{name}");
    }
    let st = dbvault(&cfg, &["status", "--json"]);
    assert_eq!(st.code, Some(0), "{}", st.stderr);
    let v = st.json();
    assert!(
        v["sources"]
            .as_array()
            .expect("s")
            .iter()
            .all(|s| s["state"] == "ok"),
        "{v}"
    );
    // What `run` stored restores.
    let target = PgDb::new("runt");
    let mut c = std::process::Command::new(bin());
    c.arg("--repo")
        .arg(d.join("repo"))
        .args(["restore", "latest", "--name", "a", "--to", &target.url()])
        .env("DBVAULT_PASSWORD", PASSWORD);
    run_cmd(c, None).ok();
    assert_eq!(target.fingerprint(), a.fingerprint());
    let out = d.join("restored.db");
    let mut c = std::process::Command::new(bin());
    c.arg("--repo")
        .arg(d.join("repo"))
        .args(["restore", "latest", "--name", "app", "--to"])
        .arg(format!("sqlite:{}", out.display()))
        .env("DBVAULT_PASSWORD", PASSWORD);
    run_cmd(c, None).ok();
    assert_eq!(sqlite3_dump(&out), sqlite3_dump(&db));

    // A source that is down: the run fails, the others still get their snapshot.
    let before_a = snapshots(d, "a");
    let cfg = write_config(
        d,
        &format!("{sources}\n[[source]]\nname = \"down\"\npostgres = \"postgresql:///dbvault_no_such_db?host=/var/run/postgresql\"\n"),
    );
    let r = dbvault(&cfg, &["run"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let text = r.text();
    assert!(
        text.contains("FAILED  down") && text.contains("dbvault_no_such_db"),
        "{text}"
    );
    assert!(text.contains("3 of 4 sources backed up"), "{text}");
    let after_a = snapshots(d, "a");
    assert!(
        after_a.iter().any(|id| !before_a.contains(id)),
        "source a got no new snapshot"
    );
    let st = dbvault(&cfg, &["status"]);
    assert_eq!(st.code, Some(1));
    assert!(
        st.text().contains("down") && st.text().contains("NEVER"),
        "{}",
        st.text()
    );
    let prom = std::fs::read_to_string(d.join("dbvault.prom")).expect("metrics");
    assert!(
        prom.contains("dbvault_backup_success{source=\"down\"} 0"),
        "{prom}"
    );
    assert!(
        prom.contains("dbvault_backup_success{source=\"a\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("dbvault_last_success_timestamp_seconds{source=\"app\"}"),
        "{prom}"
    );
    // One job alone.
    let r = dbvault(&cfg, &["run", "b"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.text().contains("1 of 1 sources"), "{}", r.text());
}

#[test]
fn config_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let pw = d.join("pw");
    std::fs::write(&pw, "x\n").expect("pw");
    let cases = [
        (
            format!("[repository.main]\nurl = \"/r\"\npassword_file = \"{}\"\ncompresion = 3\n", pw.display()),
            ":4: unknown field `compresion`",
        ),
        (
            format!("[repository.main]\nurl = \"/r\"\npassword_file = \"{}\"\n\n[[source]]\nname = \"a\"\nsqlite = \"/a.db\"\nrepository = \"offsite\"\n", pw.display()),
            ":8: source a: no repository named \"offsite\"",
        ),
        (
            "[repository.main]\nurl = \"/r\"\npassword_file = \"/nonexistent/pw\"\n".to_string(),
            ":3: repository main: cannot read the password file /nonexistent/pw",
        ),
        (
            "[[source]]\nname = \"a\"\nsqlite = \"/a.db\"\n".to_string(),
            "no [repository.NAME] section",
        ),
        (
            "[repository.main]\nurl = \"/r\"\npassword = \"inline\"\n".to_string(),
            "inline password is refused",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = d.join(format!("c{i}.toml"));
        std::fs::write(&cfg, text).expect("write");
        for cmd in ["run", "status"] {
            let r = dbvault(&cfg, &[cmd]);
            assert_eq!(r.code, Some(1), "case {i} {cmd}");
            let line = r.stderr.trim();
            assert_eq!(line.lines().count(), 1, "case {i}: {line}");
            assert!(
                line.contains(&format!("c{i}.toml")) && line.contains(want),
                "case {i}: {line}"
            );
        }
    }
    let r = dbvault(&d.join("missing.toml"), &["run"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("cannot read the configuration file"),
        "{}",
        r.stderr
    );
}

/// `run --dry-run` says what tonight would do (what each source backs up, what its
/// retention forgets, whether prune and check run) and changes nothing.
#[test]
fn a_dry_run_plans_the_night_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let mut c = std::process::Command::new(bin());
    c.arg("--repo")
        .arg(d.join("repo"))
        .arg("init")
        .env("DBVAULT_PASSWORD", PASSWORD);
    run_cmd(c, None).ok();
    let db = d.join("app.db");
    dbvault_tests::sqlite3(&db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);");
    let cfg = write_config(
        d,
        &format!(
            "[[source]]\nname = \"app\"\nsqlite = \"{}\"\n",
            db.display()
        ),
    );
    // Four snapshots from earlier nights: with tonight's, keep_last = 2 keeps one of them.
    for day in 1..=4 {
        let mut c = std::process::Command::new(bin());
        c.arg("--repo")
            .arg(d.join("repo"))
            .args([
                "backup",
                &format!("sqlite:{}", db.display()),
                "--name",
                "app",
            ])
            .args(["--time", &format!("2026-11-0{day} 01:00")])
            .env("DBVAULT_PASSWORD", PASSWORD);
        run_cmd(c, None).ok();
    }
    let before = dbvault_tests::tree(&d.join("repo"));
    let plan = dbvault(&cfg, &["run", "--dry-run", "--json"]).ok().json();
    let repo = &plan["repositories"][0];
    assert_eq!(repo["name"], "main", "{plan}");
    let src = &repo["sources"][0];
    assert_eq!(src["name"], "app");
    assert!(
        src["backup"].as_str().is_some_and(|b| b.contains("app.db")),
        "{plan}"
    );
    assert_eq!(src["forget"].as_array().map(Vec::len), Some(3), "{plan}");
    assert_eq!(src["keep"], 1, "{plan}");
    assert_eq!(plan["ok"], true, "{plan}");
    let steps: Vec<&str> = repo["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().expect("step"))
        .collect();
    assert_eq!(steps, ["prune", "check"], "{plan}");
    assert!(repo["steps"][0]["runs"].as_bool().expect("runs"), "{plan}");
    let text = dbvault(&cfg, &["run", "--dry-run"]).ok().text();
    assert!(text.contains("would forget"), "{text}");
    assert!(text.contains("nothing is changed"), "{text}");
    // Not a file of the repository changed; no snapshot, no report, no metrics.
    assert_eq!(dbvault_tests::tree(&d.join("repo")), before);
    assert_eq!(snapshots(d, "app").len(), 4);
    assert!(!d.join("dbvault.prom").exists());
    // The run then does what the plan said: the same three forgotten.
    let mut predicted: Vec<String> = src["forget"]
        .as_array()
        .expect("forget")
        .iter()
        .map(|f| f[0].as_str().expect("id").to_string())
        .collect();
    let before: Vec<String> = snapshots(d, "app");
    let night = dbvault(&cfg, &["run", "--json"]).ok().json();
    assert_eq!(night["sources"][0]["forgotten"], 3, "{night}");
    let after = snapshots(d, "app");
    predicted.sort();
    let mut gone: Vec<String> = before
        .iter()
        .filter(|id| !after.contains(id))
        .map(|id| id[..8].to_string())
        .collect();
    gone.sort();
    assert_eq!(gone, predicted, "{night}");
}
