//! A `postgres://` URL split into a password-free form (safe to show and to pass as an
//! argument) and the password (passed in the environment only).

use crate::error::{FormatError, Result};

fn invalid(msg: impl Into<String>) -> FormatError {
    FormatError::Postgres {
        context: "the PostgreSQL URL".into(),
        message: msg.into(),
        sqlstate: None,
    }
}

/// The connection parameters libpq takes in a URL's query (PostgreSQL 16's list); any
/// other is refused by name rather than as "invalid connection string".
const LIBPQ_PARAMS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "require_auth",
];

/// A `postgres://` URL split into a password-free form and the password.
#[derive(Clone)]
pub(crate) struct PgUrl {
    /// The URL without the password (safe to show and to pass as an argument).
    pub(crate) public: String,
    pub(crate) password: Option<String>,
    pub(crate) full: String,
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
                    Some((k, _)) if !LIBPQ_PARAMS.contains(&k) => {
                        return Err(invalid(format!(
                            "parameter {k:?} is not a libpq connection parameter{}: remove it (libpq's are host, port, dbname, user, sslmode, application_name, options, …)",
                            if k == "schema" {
                                " (Prisma's `schema` selects a schema for Prisma, not for a connection; to back up one schema give --schema NAME)"
                            } else {
                                ""
                            }
                        )))
                    }
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

/// `scheme://authority/db?query` with `db` replaced (added when absent).
pub(crate) fn replace_database(url: &str, db: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[auth_end..];
    let query = after.find('?').map_or("", |i| &after[i..]);
    format!("{}{}/{db}{query}", &url[..start], &rest[..auth_end])
}

/// `s` with every byte but unreserved ones and `/` percent-encoded (for a URL's path or
/// query value).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
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
