//! libpq's password file (`PGPASSFILE`, else `~/.pgpass`), so a direct backup's own
//! connections find the password where pg_dump and psql find it, and nobody has to put it
//! in a URL on the command line.
//!
//! Lines are `hostname:port:database:username:password`; `*` matches anything, `\` escapes
//! `:` and `\`; `#` starts a comment. As in libpq, a file that others can read is ignored,
//! and `localhost` matches a Unix-socket connection.

use std::path::{Path, PathBuf};

/// Where libpq would look.
fn location() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGPASSFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass"))
}

/// The password for a connection, from libpq's password file.
pub(crate) fn lookup(host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let path = location()?;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        // libpq ignores (and warns about) a password file others may read.
        eprintln!(
            "dbvault: warning: {} is readable by group or others and is ignored (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    find(
        &std::fs::read_to_string(&path).ok()?,
        host,
        port,
        database,
        user,
    )
}

/// The first matching line's password.
fn find(text: &str, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    let want = [host, port.as_str(), database, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|l| {
            let fields = split(l);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4..].join(":"))
        })
}

/// Splits a line at unescaped `:`, undoing `\:` and `\\`.
fn split(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            ':' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn lines_match_as_libpq_matches_them() {
        let text = "# comment\n\
                    db1:5432:shop:backup:s3cret\n\
                    *:*:*:reader:r\\:pw\\\\x\n\
                    localhost:5433:*:*:local\n";
        assert_eq!(
            find(text, "db1", 5432, "shop", "backup").as_deref(),
            Some("s3cret")
        );
        assert_eq!(find(text, "db1", 5432, "other", "backup"), None);
        assert_eq!(
            find(text, "any", 1, "x", "reader").as_deref(),
            Some("r:pw\\x")
        );
        assert_eq!(
            find(text, "localhost", 5433, "x", "me").as_deref(),
            Some("local")
        );
        assert_eq!(find(text, "localhost", 5432, "x", "me"), None);
    }
}
