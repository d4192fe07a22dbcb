//! Secrets stay with dbvault: a `--command`, pg_dump and psql inherit neither the
//! passphrase nor the object store's credentials, and a password in a URL on the command
//! line gets a warning (never an echo).

use dbvault_tests::{run_cmd, PgDb, Repo, PASSWORD};

const AWS_SECRET: &str = "aws-secret-5b1e-do-not-leak";
const AWS_KEY: &str = "AKIADONOTLEAK0001";

fn with_store_secrets(mut c: std::process::Command) -> std::process::Command {
    c.env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_ACCESS_KEY_ID", AWS_KEY)
        .env("DBVAULT_TEST_VISIBLE", "visible-to-children");
    c
}

#[test]
fn a_command_sees_no_passphrase_and_no_store_credentials() {
    let repo = Repo::new();
    let c = with_store_secrets(repo.cmd(&["backup", "--command", "env", "--name", "env"]));
    run_cmd(c, None).ok();
    let env = repo
        .run(&["restore", "latest", "--name", "env", "--to", "-"], None)
        .ok()
        .text();
    // The check can fail: the command does see the environment dbvault was given.
    assert!(
        env.contains("DBVAULT_TEST_VISIBLE=visible-to-children"),
        "{env}"
    );
    for secret in [PASSWORD, AWS_SECRET, AWS_KEY] {
        assert!(!env.contains(secret), "{secret} reached the command");
    }
}

/// The newest installed pg_dump (past Debian's wrapper).
fn real_pg_dump() -> String {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("apt-get install postgresql")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    versions.sort_unstable();
    format!(
        "/usr/lib/postgresql/{}/bin/pg_dump",
        versions.last().expect("a PostgreSQL version")
    )
}

#[test]
fn pg_dump_gets_the_database_password_only_and_urls_with_passwords_are_warned_about() {
    let src = PgDb::new("secrets");
    src.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let db_secret = "Db-pw-77c1-child-only";
    let role = format!("{}_u", src.name);
    src.sql(&format!(
        "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{db_secret}'"
    ));
    // A pg_dump first on PATH that records what it was given, then runs the real one.
    let dir = tempfile::tempdir().expect("tempdir");
    let spy = dir.path().join("pg_dump");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\nenv > \"{d}/env.$$\"\ncat /proc/$$/cmdline > \"{d}/args.$$\"\nexec {pg} \"$@\"\n",
            d = dir.path().display(),
            pg = real_pg_dump()
        ),
    )
    .expect("spy");
    std::fs::set_permissions(&spy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let url = format!(
        "postgresql://{role}:{db_secret}@127.0.0.1:5432/{}",
        src.name
    );
    let repo = Repo::new();
    let mut c = with_store_secrets(repo.cmd(&["backup", &url]));
    c.env("PATH", &path).env_remove("PGCLUSTER");
    let r = run_cmd(c, None).ok();
    assert!(
        r.stderr.contains("process list") && r.stderr.contains(".pgpass"),
        "no warning about the password in the URL: {}",
        r.stderr
    );
    assert!(!r.stderr.contains(db_secret), "{}", r.stderr);
    let seen: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("env."))
        .map(|e| std::fs::read_to_string(e.path()).expect("env file"))
        .collect();
    assert!(!seen.is_empty(), "the spy pg_dump never ran");
    // What `ps` shows of pg_dump: its command line, with neither secret in it.
    let args: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("args."))
        .map(|e| std::fs::read(e.path()).expect("args file"))
        .collect();
    assert!(!args.is_empty(), "the spy recorded no command line");
    for a in &args {
        let a = String::from_utf8_lossy(a);
        assert!(a.contains("pg_dump"), "{a}");
        for secret in [PASSWORD, db_secret] {
            assert!(!a.contains(secret), "{secret} is on pg_dump's command line");
        }
    }
    for env in &seen {
        assert!(
            env.contains(&format!("PGPASSWORD={db_secret}")),
            "pg_dump did not get the database password"
        );
        for secret in [PASSWORD, AWS_SECRET, AWS_KEY] {
            assert!(!env.contains(secret), "{secret} reached pg_dump");
        }
    }

    // The password in libpq's password file instead: no warning, and the backup's own
    // connections find it too.
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:5432:*:{role}:{db_secret}\n")).expect("pgpass");
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let plain = format!("postgresql://{role}@127.0.0.1:5432/{}", src.name);
    let mut c = repo.cmd(&["backup", &plain]);
    c.env("PGPASSFILE", &pgpass).env_remove("PGPASSWORD");
    let r = run_cmd(c, None).ok();
    assert!(!r.stderr.contains("process list"), "{}", r.stderr);
    assert_eq!(repo.snapshot_ids().len(), 2);
}
