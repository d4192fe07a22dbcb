//! The one PostgreSQL connection type: a `postgres://` URL resolved like libpq resolves
//! it, for a tokio-postgres connection (the COPY protocol) and for the libpq programs
//! (pg_dump, pg_dumpall, psql), with the password only ever in their environment.

use std::process::Command;
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use super::tls::{SslMode, SslSettings};

use crate::error::{FormatError, Result};

pub(crate) fn pg_err(context: &str, e: tokio_postgres::Error) -> FormatError {
    // tokio-postgres messages carry the server's text ("FATAL: …"), never the password.
    let mut msg = e.to_string();
    if let Some(db) = e.as_db_error() {
        msg = format!("{}: {}", db.severity(), db.message());
    } else if let Some(src) = std::error::Error::source(&e) {
        msg = format!("{msg}: {src}");
    }
    FormatError::Postgres {
        context: context.to_string(),
        message: msg,
        sqlstate: e.code().map(|c| c.code().to_string()),
    }
}

/// Connection settings resolved from a URL plus the libpq `PG*` variables.
#[derive(Clone)]
pub struct PgSource {
    config: Config,
    pub(crate) url: super::url::PgUrl,
    ssl: SslSettings,
    /// The outcome of [`PgSource::guard_password`], once known (shared by clones).
    guard: std::sync::Arc<std::sync::OnceLock<Option<String>>>,
}

/// The URL without the TLS parameters (tokio-postgres knows only some of them), and those.
fn split_tls_params(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if super::tls::PARAMS.contains(&k) {
            tls.push((k.to_string(), super::url::percent_decode(v)));
        } else {
            kept.push(kv);
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, tls)
}

impl PgSource {
    /// Parses a `postgres://` URL; missing pieces come from `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGDATABASE`, then libpq's defaults (local socket, OS user).
    ///
    /// # Errors
    /// Not a `postgres://` URL, or one tokio-postgres cannot parse.
    pub fn parse(url: &str) -> Result<PgSource> {
        let parts = super::url::PgUrl::parse(url)?;
        let (plain_url, tls_params) = split_tls_params(url);
        let ssl = SslSettings::resolve(&tls_params)?;
        let mut config = Config::from_str(&plain_url).map_err(|e| FormatError::Postgres {
            context: "the PostgreSQL URL".into(),
            message: e.to_string(),
            sqlstate: None,
        })?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if config.get_user().is_none() {
            // libpq's default is the operating-system user.
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .or_else(|| env("LOGNAME"))
                .or_else(|| {
                    let out = dbvault_core::secrets::scrub(&mut Command::new("id"))
                        .arg("-un")
                        .output()
                        .ok()?;
                    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    (!name.is_empty()).then_some(name)
                })
                .unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(p) = env("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_hosts().is_empty() {
            let h = env("PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
            if h.starts_with('/') {
                config.host_path(&h);
            } else {
                config.host(&h);
            }
        }
        if config.get_ports().is_empty() {
            if let Some(p) = env("PGPORT").and_then(|p| p.parse().ok()) {
                config.port(p);
            }
        }
        if config.get_dbname().is_none() {
            let db = env("PGDATABASE")
                .unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_string());
            config.dbname(&db);
        }
        if config.get_password().is_none() {
            // Where libpq (pg_dump, psql) would find it: the password file.
            let host = match config.get_hosts().first() {
                Some(Host::Tcp(h)) => h.clone(),
                _ => "localhost".to_string(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let (db, user) = (
                config.get_dbname().unwrap_or_default().to_string(),
                config.get_user().unwrap_or_default().to_string(),
            );
            if let Some(pw) = super::pgpass::lookup(&host, port, &db, &user) {
                config.password(pw);
            }
        }
        Ok(PgSource {
            config,
            url: parts,
            ssl,
            guard: Default::default(),
        })
    }

    /// Whether the URL itself holds a password (visible to every local user in the process
    /// list while dbvault runs).
    pub fn password_in_url(&self) -> bool {
        self.url.password.is_some()
    }

    /// The URL without its password: safe to show.
    pub fn public(&self) -> &str {
        &self.url.public
    }

    /// The database the URL itself names, if any (not a default).
    pub fn url_database(&self) -> Option<String> {
        self.url.database()
    }

    /// Database name.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// Password-free description: `user@host:port/db`.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            self.config.get_user().unwrap_or(""),
            self.dbname()
        )
    }

    /// The same server and credentials, another database.
    pub fn for_database(&self, db: &str) -> PgSource {
        let mut config = self.config.clone();
        config.dbname(db);
        PgSource {
            config,
            url: self.url.with_database(db),
            ssl: self.ssl.clone(),
            guard: Default::default(),
        }
    }

    /// A command for a libpq tool (pg_dump) with the connection in its environment, so
    /// no password ever appears in an argument list.
    ///
    /// # Errors
    /// As [`PgSource::guard_password`].
    pub(crate) fn tool(&self, program: &str) -> Result<Command> {
        self.guard_password()?;
        let mut c = Command::new(super::tools::program(program));
        dbvault_core::secrets::scrub(&mut c);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => c.env("PGHOST", h),
            Some(Host::Unix(p)) => c.env("PGHOST", p),
            None => &mut c,
        };
        if let Some(p) = self.config.get_ports().first() {
            c.env("PGPORT", p.to_string());
        }
        if let Some(u) = self.config.get_user() {
            c.env("PGUSER", u);
        }
        match self.config.get_password() {
            Some(p) => c.env("PGPASSWORD", String::from_utf8_lossy(p).into_owned()),
            None => c.env_remove("PGPASSWORD"),
        };
        c.env("PGDATABASE", self.dbname());
        self.ssl.apply_to(&mut c);
        Ok(c)
    }

    /// Before a libpq program gets the password: with `sslmode=prefer` libpq would send it
    /// in clear text to a server without TLS that asks for it so, so dbvault first connects
    /// itself (once per database), which refuses exactly that.
    ///
    /// # Errors
    /// The refusal, or why the connection failed.
    pub(crate) fn guard_password(&self) -> Result<()> {
        let tcp = matches!(self.config.get_hosts().first(), Some(Host::Tcp(_)));
        let risky = tcp
            && self.config.get_password().is_some()
            && matches!(self.ssl.mode, SslMode::Prefer | SslMode::Allow);
        if !risky {
            return Ok(());
        }
        let failure = self.guard.get_or_init(|| {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return Some(e.to_string()),
            };
            self.connect(&rt).err().map(|e| e.to_string())
        });
        match failure {
            None => Ok(()),
            Some(m) => Err(FormatError::Postgres {
                context: format!("before running a PostgreSQL client for {}", self.describe()),
                message: m.clone(),
                sqlstate: None,
            }),
        }
    }

    /// Connects as libpq would with the same `sslmode` (see [`super::tls`]): TLS whenever
    /// the mode and the server allow it; over a plain TCP connection, never a password in
    /// clear text unless `sslmode=disable`.
    pub(crate) fn connect(&self, rt: &tokio::runtime::Runtime) -> Result<Client> {
        let context = || format!("connecting to {}", self.describe());
        let tcp = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => Some(h.clone()),
            _ => None,
        };
        let (client, conn_task) = match (tcp, self.ssl.mode) {
            // libpq ignores sslmode on a Unix socket: it never leaves the machine.
            (None, _) | (_, SslMode::Disable) => {
                let mut config = self.config.clone();
                config.ssl_mode(PgSslMode::Disable);
                let (c, conn) = rt
                    .block_on(config.connect(NoTls))
                    .map_err(|e| pg_err(&context(), e))?;
                (c, boxed(conn))
            }
            (Some(host), mode) => {
                let tls = self.ssl.connector()?;
                let mut config = self.config.clone();
                config.ssl_mode(PgSslMode::Require);
                match rt.block_on(config.connect(tls)) {
                    Ok((c, conn)) => (c, boxed(conn)),
                    Err(e) if matches!(mode, SslMode::Prefer | SslMode::Allow) && no_tls(&e) => {
                        self.refuse_cleartext_password(&host)?;
                        config.ssl_mode(PgSslMode::Disable);
                        let (c, conn) = rt
                            .block_on(config.connect(NoTls))
                            .map_err(|e| pg_err(&context(), e))?;
                        (c, boxed(conn))
                    }
                    Err(e) => return Err(pg_err(&context(), e)),
                }
            }
        };
        rt.spawn(conn_task);
        Ok(client)
    }

    /// On a plain connection, a server that asks for the password in clear text gets none.
    fn refuse_cleartext_password(&self, host: &str) -> Result<()> {
        if self.config.get_password().is_none() {
            return Ok(());
        }
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or_default();
        if super::tls::asks_cleartext(host, port, user, self.dbname())? {
            return Err(FormatError::Postgres {
                context: format!("connecting to {}", self.describe()),
                message: format!(
                    "the server does not offer TLS and asks for the password in clear text;                      dbvault refuses to send it over an unencrypted connection (enable ssl on                      the server or use scram-sha-256 in pg_hba.conf, or add sslmode=disable to                      the URL to send it anyway; {host}:{port})"
                ),
                sqlstate: None,
            });
        }
        Ok(())
    }
}

/// tokio-postgres's answer when the server declines the SSL request.
fn no_tls(e: &tokio_postgres::Error) -> bool {
    let mut text = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        text.push_str(&src.to_string());
    }
    text.contains("server does not support TLS")
}

type ConnTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The connection's driver, whichever stream it runs over.
fn boxed<F, E>(conn: F) -> ConnTask
where
    F: std::future::Future<Output = std::result::Result<(), E>> + Send + 'static,
{
    Box::pin(async move {
        let _ = conn.await;
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FormatError::io("tokio runtime", e))
}

pub(crate) fn rows(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    let msgs = rt
        .block_on(c.simple_query(sql))
        .map_err(|e| pg_err(sql, e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}
