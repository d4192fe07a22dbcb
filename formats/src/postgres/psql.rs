//! Talking to PostgreSQL through its own tools (psql), with the password kept out of
//! argument lists and messages: a `postgres://` URL split into a password-free form (safe
//! to show and to pass as an argument) and the password (passed in the environment).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use super::conn::PgSource;
use crate::error::{FormatError, Result};

/// A `postgres://` URL split into a password-free form and the password.
#[derive(Clone)]
pub(crate) struct PgUrl {
    /// The URL without the password (safe to show and to pass as an argument).
    pub(crate) public: String,
    pub(crate) password: Option<String>,
    pub(crate) full: String,
}

fn invalid(msg: impl Into<String>) -> FormatError {
    FormatError::Postgres {
        context: "the PostgreSQL URL".into(),
        message: msg.into(),
    }
}

fn no_psql(e: std::io::Error) -> FormatError {
    FormatError::io(
        "psql (install the PostgreSQL client: apt-get install postgresql-client)",
        e,
    )
}

impl PgUrl {
    /// Parses `postgres://user:password@host:port/db?params` (password optional).
    pub(crate) fn parse(url: &str) -> Result<PgUrl> {
        let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        else {
            return Err(invalid("not a PostgreSQL URL (postgres://…)"));
        };
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, mut password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (Some(user), Some(percent_decode(pw))),
                None => (Some(u), None),
            },
            None => (None, None),
        };
        // A password given as a query parameter is moved out too.
        let mut query_parts = Vec::new();
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        if let Some(q) = query {
            for kv in q.split('&') {
                match kv.split_once('=') {
                    Some(("password", v)) => password = Some(percent_decode(v)),
                    _ => query_parts.push(kv),
                }
            }
        }
        let mut public = String::from("postgresql://");
        if let Some(u) = user {
            public.push_str(u);
            public.push('@');
        }
        public.push_str(host);
        public.push_str(path);
        if !query_parts.is_empty() {
            public.push('?');
            public.push_str(&query_parts.join("&"));
        }
        Ok(PgUrl {
            public,
            password,
            full: url.to_string(),
        })
    }

    /// The database the URL names, if any.
    pub(crate) fn database(&self) -> Option<String> {
        let url = &self.public;
        let start = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[start..];
        let path = &rest[rest.find(['/', '?']).unwrap_or(rest.len())..];
        let db = path.strip_prefix('/')?.split('?').next()?;
        (!db.is_empty()).then(|| percent_decode(db))
    }

    /// The same server and credentials, another database.
    pub(crate) fn with_database(&self, db: &str) -> PgUrl {
        PgUrl {
            public: replace_database(&self.public, db),
            password: self.password.clone(),
            full: replace_database(&self.full, db),
        }
    }

}

impl PgSource {
    /// A command for a libpq program that takes the connection as `-d URL`: the
    /// password is in its environment, never in its arguments.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut c = Command::new(super::tools::program(program));
        if let Some(pw) = &self.url.password {
            c.env("PGPASSWORD", pw);
        }
        c
    }

    /// Runs `psql` on this database, feeding it what `feed` writes. With `single`, the
    /// script runs in one transaction (all or nothing). On failure the error names the
    /// failing statement, as psql reported it.
    ///
    /// # Errors
    /// [`FormatError::Postgres`] naming `what` and psql's error, or `feed`'s error.
    pub fn psql(
        &self,
        what: &str,
        single: bool,
        feed: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
    ) -> Result<()> {
        let mut c = self.command("psql");
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--echo-errors",
            "-d",
            &self.url.public,
        ]);
        if single {
            c.arg("--single-transaction");
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(no_psql)?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| no_psql(std::io::Error::other("no stderr")))?;
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| no_psql(std::io::Error::other("no stdin")))?;
        let fed = feed(&mut stdin);
        drop(stdin);
        let status = child.wait().map_err(no_psql)?;
        let errs = errs.join().unwrap_or_default();
        if !status.success() {
            return Err(FormatError::Postgres {
                context: format!("{what} failed"),
                message: summarize_psql_error(&errs),
            });
        }
        // psql exits 0 when its input ended early only if nothing failed; a feed error
        // (e.g. damaged backup data) is still an error, and keeps its kind.
        fed
    }

    /// Runs one query with psql and returns its first output line.
    ///
    /// # Errors
    /// [`FormatError::Postgres`] with psql's error.
    pub fn query(&self, sql: &str) -> Result<String> {
        let out = self
            .command("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url.public, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(no_psql)?;
        if !out.status.success() {
            return Err(FormatError::Postgres {
                context: self.url.public.clone(),
                message: summarize_psql_error(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }
}

/// `scheme://authority/db?query` with `db` replaced (added when absent).
pub(crate) fn replace_database(url: &str, db: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[auth_end..];
    let query = after.find('?').map_or("", |i| &after[i..]);
    format!("{}{}/{db}{query}", &url[..start], &rest[..auth_end])
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line from psql's stderr: the ERROR and the statement it was running.
fn summarize_psql_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let error = lines
        .iter()
        .find(|l| l.contains("ERROR:") || l.contains("FATAL:") || l.contains("error:"))
        .or(lines.first())
        .copied()
        .unwrap_or("psql failed without a message");
    let statement = lines
        .iter()
        .position(|l| l.contains("ERROR:"))
        .and_then(|i| {
            lines[i + 1..].iter().find(|l| {
                !l.starts_with("DETAIL") && !l.starts_with("HINT") && !l.starts_with("LINE")
            })
        })
        .map(|s| format!("; statement: {}", s.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    format!("{error}{statement}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            replace_database("postgres://u:p@h:5/db?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgresql:///postgres", "x"),
            "postgresql:///x"
        );
        assert_eq!(replace_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            replace_database("postgresql://@/db?host=/run/pg&port=5432", "x"),
            "postgresql://@/x?host=/run/pg&port=5432"
        );
    }

    #[test]
    fn password_is_split_off() {
        let u =
            PgUrl::parse("postgres://bob:s%40cret@db.example:5433/shop?sslmode=disable").unwrap();
        assert_eq!(
            u.public,
            "postgresql://bob@db.example:5433/shop?sslmode=disable"
        );
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        let u = PgUrl::parse("postgresql:///shop?host=/var/run/postgresql&password=x").unwrap();
        assert_eq!(u.public, "postgresql:///shop?host=/var/run/postgresql");
        assert_eq!(u.password.as_deref(), Some("x"));
        assert!(PgUrl::parse("mysql://x").is_err());
        assert_eq!(percent_decode("a%2Fb%"), "a/b%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
