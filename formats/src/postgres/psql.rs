//! Talking to PostgreSQL through its own client, psql, with the password kept out of
//! argument lists and messages.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use super::conn::PgSource;
use crate::error::{FormatError, Result};

fn no_psql(e: std::io::Error) -> FormatError {
    FormatError::io(
        "psql (install the PostgreSQL client: apt-get install postgresql-client)",
        e,
    )
}

impl PgSource {
    /// A command for a libpq program that takes the connection as `-d URL`: the
    /// password is in its environment, never in its arguments.
    ///
    /// # Errors
    /// As [`PgSource::guard_password`].
    pub(crate) fn command(&self, program: &str) -> Result<Command> {
        self.guard_password()?;
        let mut c = Command::new(super::tools::program(program));
        dbvault_core::secrets::scrub(&mut c);
        if let Some(pw) = &self.url.password {
            c.env("PGPASSWORD", pw);
        }
        Ok(c)
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
        let mut c = self.command("psql")?;
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            // `ERROR:  42P01: …`: the SQLSTATE goes into the error (see `summarize`).
            "-v",
            "VERBOSITY=verbose",
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
        // The backup's bytes could not be read (damage, a store that does not answer):
        // psql is killed, not left to read the end of its input, where it would commit
        // what it was given so far, in a single transaction or not. That error is the one
        // reported, with its kind. A failed write to psql (it stopped on an SQL error) is
        // reported with psql's own message, below.
        let unread = matches!(&fed, Err(FormatError::Core(e)) if !matches!(e, dbvault_core::Error::Output(_)));
        if unread {
            let _ = child.kill();
            drop(stdin);
            let _ = child.wait();
            let _ = errs.join();
            return fed;
        }
        drop(stdin);
        let status = child.wait().map_err(no_psql)?;
        let errs = errs.join().unwrap_or_default();
        if !status.success() {
            let (message, sqlstate) = summarize_psql_error(&errs);
            return Err(FormatError::Postgres {
                context: format!("{what} failed"),
                message,
                sqlstate,
            });
        }
        fed
    }

    /// Runs one query with psql and returns its first output line.
    ///
    /// # Errors
    /// [`FormatError::Postgres`] with psql's error.
    pub fn query(&self, sql: &str) -> Result<String> {
        Ok(self
            .query_lines(sql)?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// Runs one query with psql and returns its output lines (columns separated by `|`).
    ///
    /// # Errors
    /// [`FormatError::Postgres`] with psql's error.
    pub fn query_lines(&self, sql: &str) -> Result<Vec<String>> {
        let out = self
            .command("psql")?
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "VERBOSITY=verbose",
                "-d",
                &self.url.public,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(no_psql)?;
        if !out.status.success() {
            let (message, sqlstate) = summarize_psql_error(&String::from_utf8_lossy(&out.stderr));
            return Err(FormatError::Postgres {
                context: self.url.public.clone(),
                message,
                sqlstate,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}

/// One line from psql's stderr (the ERROR and the statement it was running), and the
/// SQLSTATE that `VERBOSITY=verbose` puts before the message.
fn summarize_psql_error(stderr: &str) -> (String, Option<String>) {
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
            // psql's echo (`STATEMENT:`), else the first line that is not the error's
            // DETAIL, HINT, LOCATION or the `LINE 1:` quote and its `^` marker.
            let after = &lines[i + 1..];
            after
                .iter()
                .find(|l| l.starts_with("STATEMENT:"))
                .or_else(|| {
                    after.iter().find(|l| {
                        !l.starts_with("DETAIL")
                            && !l.starts_with("HINT")
                            && !l.starts_with("LINE")
                            && !l.starts_with("LOCATION")
                            && !l.starts_with('^')
                    })
                })
        })
        .map(|s| {
            // psql labels the echoed statement itself (`--echo-errors`).
            let s = s.trim_start_matches("STATEMENT:").trim();
            format!("; statement: {}", s.chars().take(200).collect::<String>())
        })
        .unwrap_or_default();
    // `psql:<stdin>:12: ERROR:  42P01: x` and `ERROR:  x` alike read `ERROR: x`.
    let mut sqlstate = None;
    let error = match error.find("ERROR:") {
        Some(i) => {
            let rest = error[i + 6..].trim();
            let code = rest.get(..5).filter(|c| {
                c.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
                    && rest[5..].starts_with(':')
            });
            let rest = match code {
                Some(c) => {
                    sqlstate = Some(c.to_string());
                    rest[6..].trim()
                }
                None => rest,
            };
            format!("ERROR: {rest}")
        }
        None => error.to_string(),
    };
    (format!("{error}{statement}"), sqlstate)
}

#[cfg(test)]
mod tests {
    use super::summarize_psql_error;

    #[test]
    fn the_sqlstate_of_a_verbose_error_is_kept_apart_from_its_message() {
        let err = "psql:<stdin>:12: ERROR:  42P01: relation \"nope\" does not exist\nLINE 1: select * from nope;\n                      ^\nLOCATION:  parserOpenTable, parse_relation.c:1384\nSTATEMENT:  select * from nope;\n";
        let (m, code) = summarize_psql_error(err);
        assert_eq!(
            m,
            "ERROR: relation \"nope\" does not exist; statement: select * from nope;"
        );
        assert_eq!(code.as_deref(), Some("42P01"));
        let (m, code) = summarize_psql_error("ERROR:  syntax error at end of input\n");
        assert_eq!(
            (m.as_str(), code),
            ("ERROR: syntax error at end of input", None)
        );
    }
}
