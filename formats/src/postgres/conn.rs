//! The one PostgreSQL connection type: a `postgres://` URL resolved like libpq resolves
//! it, for a tokio-postgres connection (the COPY protocol) and for the libpq programs
//! (pg_dump, pg_dumpall, psql), with the password only ever in their environment.

use std::process::Command;
use std::str::FromStr;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

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
    }
}

/// Connection settings resolved from a URL plus the libpq `PG*` variables.
#[derive(Clone)]
pub struct PgSource {
    config: Config,
    pub(crate) url: super::url::PgUrl,
}

impl PgSource {
    /// Parses a `postgres://` URL; missing pieces come from `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGDATABASE`, then libpq's defaults (local socket, OS user).
    ///
    /// # Errors
    /// Not a `postgres://` URL, or one tokio-postgres cannot parse.
    pub fn parse(url: &str) -> Result<PgSource> {
        let parts = super::url::PgUrl::parse(url)?;
        let mut config = Config::from_str(url).map_err(|e| FormatError::Postgres {
            context: "the PostgreSQL URL".into(),
            message: e.to_string(),
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
        Ok(PgSource { config, url: parts })
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
        }
    }

    /// A command for a libpq tool (pg_dump) with the connection in its environment, so
    /// no password ever appears in an argument list.
    pub(crate) fn tool(&self, program: &str) -> Command {
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
        c
    }

    pub(crate) fn connect(&self, rt: &tokio::runtime::Runtime) -> Result<Client> {
        let (client, conn) = rt
            .block_on(self.config.connect(NoTls))
            .map_err(|e| pg_err(&format!("connecting to {}", self.describe()), e))?;
        rt.spawn(conn);
        Ok(client)
    }
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
