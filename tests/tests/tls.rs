//! TLS to PostgreSQL: against a server with `ssl = on` (a CA and a server certificate made
//! here with openssl) every connection a backup and a restore make is encrypted (the
//! server's `pg_hba.conf` admits TLS connections only, and its log records each one);
//! `sslmode=verify-full` works with the right CA and fails clearly with a wrong one; a
//! server without TLS that asks for the password in clear text gets none.

use std::path::Path;
use std::process::Command;

use dbvault_tests::{run_cmd, PgCluster, Repo};

const DB_PASSWORD: &str = "tls-Db-pw-4411";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is missing: apt-get install openssl (.ci/run does)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir` (`name.crt`, `name.key`).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A certificate `name.crt` (key `name.key`, mode 0600) for subject `subj`, signed by CA
/// `ca`, X.509 v3 with `extensions` (rustls, unlike OpenSSL, refuses v1 certificates):
/// returns (cert, key).
fn make_signed_cert(
    dir: &Path,
    ca: &str,
    name: &str,
    subj: &str,
    extensions: &str,
) -> (String, String) {
    let (csr, cnf) = (format!("{name}.csr"), format!("{name}.cnf"));
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", &key, "-out", &csr,
        ],
    );
    std::fs::write(dir.join(&cnf), extensions).expect("extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &cnf,
            "-out",
            &crt,
        ],
    );
    let key = dir.join(key);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    (
        dir.join(crt).display().to_string(),
        key.display().to_string(),
    )
}

/// A server certificate for 127.0.0.1 and localhost signed by CA `ca`, owned by the
/// `postgres` user: returns (cert, key).
fn make_server_cert(dir: &Path, ca: &str) -> (String, String) {
    let (cert, key) = make_signed_cert(
        dir,
        ca,
        "server",
        "/CN=127.0.0.1",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    );
    for p in [&cert, &key] {
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(p)
            .status()
            .expect("chown");
    }
    (cert, key)
}

/// A client certificate for `user` signed by CA `ca`: returns (cert, key).
fn make_client_cert(dir: &Path, ca: &str, user: &str) -> (String, String) {
    make_signed_cert(
        dir,
        ca,
        "client",
        &format!("/CN={user}"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
}

fn make_user(cluster: &PgCluster, user: &str) {
    cluster.sql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}';"
        ),
    );
    cluster.sql("postgres", &format!("CREATE DATABASE shop OWNER {user}"));
    cluster.sql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 2000) g;",
    );
}

fn backup(repo: &Repo, url: &str, env: &[(&str, &str)]) -> dbvault_tests::Run {
    let mut c = repo.cmd(&["backup", url, "--name", "shop"]);
    c.env("PGPASSWORD", DB_PASSWORD)
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT");
    for (k, v) in env {
        c.env(k, v);
    }
    run_cmd(c, None)
}

#[test]
fn every_connection_to_a_tls_server_is_encrypted_and_verified_when_asked() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    let (cert, key) = make_server_cert(d, "ca");
    let cluster = PgCluster::with_tcp(Some((
        &format!(
            "ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\nlog_connections = on"
        ),
        // TLS connections only: anything dbvault or its pg_dump sends in clear is refused.
        "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject",
    )));
    make_user(&cluster, "tls_u");
    let url = format!("postgresql://tls_u@127.0.0.1:{}/shop", cluster.port);
    let repo = Repo::new();

    // The default (prefer): encrypted, as libpq.
    backup(&repo, &url, &[]).ok();
    // verify-full with the server's CA, from the URL and from PGSSLMODE/PGSSLROOTCERT.
    let ca = d.join("ca.crt").display().to_string();
    backup(
        &repo,
        &format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
        &[],
    )
    .ok();
    backup(
        &repo,
        &url,
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    )
    .ok();
    // Restore into the same server: its connections are held to the same rules.
    let mut c = repo.cmd(&[
        "restore",
        "latest",
        "--table",
        "public.orders",
        "--rename-table",
        "orders_back",
        "--to",
        &format!("{url}?sslmode=require"),
    ]);
    c.env("PGPASSWORD", DB_PASSWORD);
    run_cmd(c, None).ok();
    assert_eq!(
        cluster
            .sql("shop", "SELECT count(*) FROM orders_back")
            .trim(),
        "2000"
    );

    // A wrong CA: refused, clearly, and nothing is stored.
    let before = repo.snapshot_ids().len();
    let other = d.join("other-ca.crt").display().to_string();
    let r = backup(
        &repo,
        &format!("{url}?sslmode=verify-full&sslrootcert={other}"),
        &[],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("invalid peer certificate: UnknownIssuer")
            && r.stderr.contains("127.0.0.1"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(DB_PASSWORD));
    assert_eq!(repo.snapshot_ids().len(), before);
    // verify-full without any root certificate says where to put one.
    let r = backup(
        &repo,
        &format!("{url}?sslmode=verify-full"),
        &[("HOME", "/nonexistent")],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("sslrootcert"), "{}", r.stderr);

    // The server saw only encrypted connections from tls_u (its log, like pg_stat_ssl,
    // records the protocol of each).
    let log = cluster.log();
    let authorized: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized: user=tls_u"))
        .collect();
    assert!(authorized.len() >= 6, "{log}");
    for l in &authorized {
        assert!(l.contains("SSL enabled"), "an unencrypted connection: {l}");
    }
    assert!(!log.contains("no pg_hba.conf entry"), "{log}");
}

#[test]
fn a_server_asking_for_a_cleartext_password_over_a_plain_connection_gets_none() {
    let cluster = PgCluster::with_tcp(Some((
        "ssl = off\nlog_connections = on",
        "host all all 127.0.0.1/32 password",
    )));
    make_user(&cluster, "plain_u");
    let url = format!("postgresql://plain_u@127.0.0.1:{}/shop", cluster.port);
    let repo = Repo::new();
    let r = backup(&repo, &url, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("refuses to send it") && r.stderr.contains("sslmode=disable"),
        "{}",
        r.stderr
    );
    assert!(repo.snapshot_ids().is_empty());
    let log = cluster.log();
    assert!(
        !log.contains("connection authorized: user=plain_u"),
        "the password was sent: {log}"
    );
    // The user can say that a plain connection is what they want.
    backup(&repo, &format!("{url}?sslmode=disable"), &[]).ok();
    assert_eq!(repo.snapshot_ids().len(), 1);
    // A restore (psql first, then COPY) is held to the same rule.
    cluster.sql("postgres", "CREATE DATABASE copy OWNER plain_u");
    let copy = format!("postgresql://plain_u@127.0.0.1:{}/copy", cluster.port);
    let mut c = repo.cmd(&["restore", "latest", "--to", &copy]);
    c.env("PGPASSWORD", DB_PASSWORD);
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("refuses to send it"), "{}", r.stderr);
    let log = cluster.log();
    assert_eq!(
        log.matches("connection authorized: user=plain_u").count(),
        log.matches("connection authorized: user=plain_u database=shop")
            .count(),
        "a restore connection was authorized with a cleartext password: {log}"
    );
    let mut c = repo.cmd(&[
        "restore",
        "latest",
        "--to",
        &format!("{copy}?sslmode=disable"),
    ]);
    c.env("PGPASSWORD", DB_PASSWORD);
    run_cmd(c, None).ok();
    assert_eq!(
        cluster.sql("copy", "SELECT count(*) FROM orders").trim(),
        "2000"
    );
}

#[test]
fn a_client_certificate_authenticates_the_backup() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    make_ca(d, "ca");
    let (cert, key) = make_server_cert(d, "ca");
    let ca = d.join("ca.crt").display().to_string();
    Command::new("chmod")
        .args(["0644", &ca])
        .status()
        .expect("chmod");
    let cluster = PgCluster::with_tcp(Some((
        &format!(
            "ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\nssl_ca_file = '{ca}'"
        ),
        // No password at all: the certificate is the credential.
        "hostssl all cert_u 127.0.0.1/32 cert\nhost all all 127.0.0.1/32 reject",
    )));
    make_user(&cluster, "cert_u");
    let (ccert, ckey) = make_client_cert(d, "ca", "cert_u");
    let base = format!(
        "postgresql://cert_u@127.0.0.1:{}/shop?sslmode=verify-ca&sslrootcert={ca}",
        cluster.port
    );
    let repo = Repo::new();
    let without = |url: &str, env: &[(&str, &str)]| {
        let mut c = repo.cmd(&["backup", url, "--name", "shop"]);
        c.env_remove("PGPASSWORD").env("HOME", d);
        for (k, v) in env {
            c.env(k, v);
        }
        run_cmd(c, None)
    };
    // Without the certificate the server refuses.
    let r = without(&base, &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(repo.snapshot_ids().is_empty());
    // From the URL, and from PGSSLCERT/PGSSLKEY (pg_dump takes the same).
    without(&format!("{base}&sslcert={ccert}&sslkey={ckey}"), &[]).ok();
    without(&base, &[("PGSSLCERT", &ccert), ("PGSSLKEY", &ckey)]).ok();
    assert_eq!(repo.snapshot_ids().len(), 2);
}
