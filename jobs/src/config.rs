//! The configuration file: repositories, sources, retention and schedules for `run` and
//! `status`. TOML; unknown keys are errors naming the line.
//!
//! ```toml
//! [repository.main]
//! url = "/backups/repo"
//! password_file = "/etc/dbvault/pw"        # or password_command = "pass show dbvault"
//!
//! [retention]                               # default for every source
//! keep_daily = 7
//! keep_weekly = 4
//! keep_monthly = 12
//!
//! [prune]
//! every = "7d"                              # prune when the last prune is older
//!
//! [check]
//! every = "1d"
//! read_data_subset = "5%"
//!
//! [metrics]
//! textfile = "/var/lib/prometheus/node-exporter/dbvault.prom"
//!
//! [[source]]
//! name = "shop"
//! postgres = "postgresql:///shop"
//! max_age = "26h"                           # status: older than this is a missed backup
//!
//! [[source]]
//! name = "app"
//! sqlite = "/var/lib/app/app.db"
//! retention = { keep_daily = 14 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use dbvault_core::retention::{Policy, Span};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repositories by name.
    #[serde(default)]
    pub repository: BTreeMap<String, RepoConfig>,
    /// Default retention.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Prune schedule.
    #[serde(default)]
    pub prune: Option<Schedule>,
    /// Check schedule.
    #[serde(default)]
    pub check: Option<Schedule>,
    /// Prometheus textfile output.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Sources, in the order they are backed up.
    #[serde(default)]
    pub source: Vec<Source>,
}

/// One repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Local path or URL.
    pub url: String,
    /// Passphrase from the first line of this file.
    pub password_file: Option<toml::Spanned<PathBuf>>,
    /// Passphrase from this command's first output line (`sh -c`).
    pub password_command: Option<String>,
    /// Inline passphrase: refused unless `allow_inline_password = true`.
    pub password: Option<String>,
    /// The user insists on an inline passphrase.
    #[serde(default)]
    pub allow_inline_password: bool,
    /// S3 endpoint URL (`--s3-endpoint` overrides it).
    pub s3_endpoint: Option<String>,
    /// S3 region (`--s3-region` overrides it).
    pub s3_region: Option<String>,
    /// Path-style S3 addressing.
    #[serde(default)]
    pub s3_path_style: bool,
    /// This repository's own S3 keys, from a file only the service reads: an environment
    /// file (`AWS_ACCESS_KEY_ID=…`, `AWS_SECRET_ACCESS_KEY=…`, as systemd's
    /// `EnvironmentFile=` or `LoadCredential=` gives it) or an AWS credentials file
    /// (`aws_access_key_id = …` under `[profile]` sections). Without it, the process's
    /// AWS environment and profile.
    pub s3_credentials_file: Option<toml::Spanned<PathBuf>>,
    /// With an AWS credentials file: the section to read (default `default`).
    pub s3_profile: Option<String>,
    /// This host only adds to the repository (as `--append-only`): `run` backs up and
    /// checks, and leaves retention and prune to the admin host.
    #[serde(default)]
    pub append_only: bool,
    /// Another configured repository that `run` copies this one's new snapshots into
    /// (the offsite copy), then applies the same retention there.
    pub copy_to: Option<toml::Spanned<String>>,
}

/// Retention rules: the command line's `--keep-…` options, as one type.
pub use dbvault_core::retention::KeepOptions as Retention;

/// How often a maintenance step runs during `run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Run when the last one is older than this (e.g. `7d`); default: every `run`.
    pub every: Option<String>,
    /// For `check`: `--read-data-subset`.
    pub read_data_subset: Option<String>,
}

/// Metrics output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Prometheus textfile collector file, written atomically after `run`.
    pub textfile: PathBuf,
}

/// One source.
#[derive(Debug, Deserialize)]
pub struct Source {
    /// Source name (snapshot group).
    pub name: String,
    /// A PostgreSQL database URL.
    pub postgres: Option<String>,
    /// A PostgreSQL server URL: every database, with roles and tablespaces.
    pub postgres_server: Option<String>,
    /// An SQLite database file.
    pub sqlite: Option<PathBuf>,
    /// A command whose output is backed up.
    pub command: Option<String>,
    /// Repository name (default: the only one).
    pub repository: Option<toml::Spanned<String>>,
    /// Retention for this source (default: the file's).
    pub retention: Option<Retention>,
    /// `status`: a newest snapshot older than this is a missed backup (default 26h).
    pub max_age: Option<String>,
    /// Tags for its snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// PostgreSQL: store only the rows row-level security lets the role see
    /// (`backup --enable-row-security`).
    #[serde(default)]
    pub enable_row_security: bool,
    /// PostgreSQL selections: `table`, `exclude_table`, `exclude_table_data`, `schema`,
    /// `exclude_schema` (lists of patterns) and `schema_only`, as `backup`'s options of
    /// the same names (one type for both).
    #[serde(flatten)]
    pub selection: dbvault_formats::postgres::Selection,
    /// An SQLite source backed up continuously by `dbvault follow`: the least time between
    /// two snapshots (e.g. `"10s"`). `run` still takes its nightly snapshot (a safety net,
    /// costing only the pages changed since the follower's last one).
    pub follow: Option<String>,
    /// With `follow`: how often the follower applies the retention (default `"10min"`).
    pub compact_every: Option<String>,
    /// With `postgres`: base backups of the whole cluster (`backup --physical`), its WAL
    /// archived by the server's `archive_command` with `wal-push --name` this source's name.
    #[serde(default)]
    pub physical: bool,
    /// With `physical`, on the database host: read the data directory directly (`--pgdata`).
    pub pgdata: Option<PathBuf>,
    /// With `physical`: how long a base backup waits for its WAL to be archived (default
    /// `"5min"`).
    pub wal_wait: Option<String>,
    /// With `physical`: the server's `archive_timeout`, to judge a stalled archive by when
    /// the server cannot be asked (default: the server's own setting).
    pub archive_timeout: Option<String>,
    /// Keys no field took: an error naming them (`deny_unknown_fields` cannot be combined
    /// with the flattened selection).
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

impl Source {
    /// The `backup` SOURCE argument or the command, and whether it is a whole server.
    pub fn target(&self) -> Result<(Option<String>, Option<String>, bool)> {
        match (
            &self.postgres,
            &self.postgres_server,
            &self.sqlite,
            &self.command,
        ) {
            (Some(u), None, None, None) => Ok((Some(u.clone()), None, false)),
            (None, Some(u), None, None) => Ok((Some(u.clone()), None, true)),
            (None, None, Some(p), None) => {
                Ok((Some(format!("sqlite:{}", p.display())), None, false))
            }
            (None, None, None, Some(c)) => Ok((None, Some(c.clone()), false)),
            _ => bail!(
                "source {:?} needs exactly one of postgres, postgres_server, sqlite or command",
                self.name
            ),
        }
    }

    /// Its PostgreSQL selection.
    pub fn selection(&self) -> dbvault_formats::postgres::Selection {
        self.selection.clone()
    }

    /// `follow` and `compact_every`, when this source is followed.
    pub fn following(&self) -> Result<Option<(std::time::Duration, std::time::Duration)>> {
        let Some(f) = &self.follow else {
            if self.compact_every.is_some() {
                bail!("source {}: compact_every needs follow", self.name);
            }
            return Ok(None);
        };
        if self.sqlite.is_none() {
            bail!(
                "source {}: follow backs up an SQLite database continuously; it needs sqlite = \"PATH\"",
                self.name
            );
        }
        let secs = |what: &str, v: &str| -> Result<std::time::Duration> {
            let n = Span::parse(v)
                .with_context(|| format!("source {}: {what}", self.name))?
                .approx_seconds();
            if n == 0 {
                bail!("source {}: {what} must be at least 1s", self.name);
            }
            Ok(std::time::Duration::from_secs(n))
        };
        let every = secs(
            "compact_every",
            self.compact_every.as_deref().unwrap_or("10min"),
        )?;
        Ok(Some((secs("follow", f)?, every)))
    }

    /// `wal_wait`, when this source takes base backups; checks the physical options.
    pub fn physical_wait(&self) -> Result<Option<std::time::Duration>> {
        if !self.physical {
            for (k, set) in [
                ("pgdata", self.pgdata.is_some()),
                ("wal_wait", self.wal_wait.is_some()),
                ("archive_timeout", self.archive_timeout.is_some()),
            ] {
                if set {
                    bail!("source {}: {k} needs physical = true", self.name);
                }
            }
            return Ok(None);
        }
        if self.postgres.is_none() {
            bail!(
                "source {}: physical = true takes base backups of a PostgreSQL cluster: give postgres = \"postgres://…\"",
                self.name
            );
        }
        if !self.selection().is_whole() || self.enable_row_security {
            bail!(
                "source {}: a physical source copies the whole cluster (table/schema selections and enable_row_security are for logical sources)",
                self.name
            );
        }
        let wait = Span::parse(self.wal_wait.as_deref().unwrap_or("5min"))
            .with_context(|| format!("source {}: wal_wait", self.name))?;
        if let Some(t) = &self.archive_timeout {
            Span::parse(t).with_context(|| format!("source {}: archive_timeout", self.name))?;
        }
        Ok(Some(std::time::Duration::from_secs(wait.approx_seconds())))
    }

    /// `archive_timeout` in seconds, when configured.
    pub fn archive_timeout_secs(&self) -> Option<u64> {
        self.archive_timeout
            .as_deref()
            .and_then(|t| Span::parse(t).ok())
            .map(|s| s.approx_seconds())
    }

    /// `max_age` in seconds.
    pub fn max_age_secs(&self) -> Result<u64> {
        Ok(match &self.max_age {
            Some(s) => Span::parse(s)?.approx_seconds(),
            None => 26 * 3600,
        })
    }
}

/// Where the configuration is: `--config`, else `/etc/dbvault/dbvault.toml`, else
/// `$XDG_CONFIG_HOME/dbvault/dbvault.toml` (or `~/.config/…`).
pub fn locate(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let system = PathBuf::from("/etc/dbvault/dbvault.toml");
    if system.exists() {
        return Ok(system);
    }
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(d) = xdg {
        let p = d.join("dbvault/dbvault.toml");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no configuration file: give --config FILE, or create /etc/dbvault/dbvault.toml")
}

/// Reads and validates a configuration file. Errors are one line naming file and line.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let cfg: Config = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().replace('\n', " ");
        match line {
            Some(l) => anyhow!("{}:{l}: {msg}", path.display()),
            None => anyhow!("{}: {msg}", path.display()),
        }
    })?;
    let at = |what: String| anyhow!("{}: {what}", path.display());
    let line_of =
        |span: std::ops::Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
    let at_line = |span: std::ops::Range<usize>, what: String| {
        anyhow!("{}:{}: {what}", path.display(), line_of(span))
    };
    if cfg.repository.is_empty() {
        return Err(at(
            "no [repository.NAME] section: name at least one repository".into(),
        ));
    }
    for (name, r) in &cfg.repository {
        let sources = [
            r.password_file.is_some(),
            r.password_command.is_some(),
            r.password.is_some(),
        ];
        if sources.iter().filter(|x| **x).count() > 1 {
            return Err(at(format!(
                "repository {name}: give one of password_file, password_command, password"
            )));
        }
        if let Some(f) = &r.password_file {
            if let Err(e) = std::fs::File::open(f.get_ref()) {
                return Err(at_line(
                    f.span(),
                    format!(
                        "repository {name}: cannot read the password file {}: {e}",
                        f.get_ref().display()
                    ),
                ));
            }
        }
        // The S3 credentials file is read when its repository is opened: a bad one
        // fails that repository's steps, never the other repositories' backups.
        if let Some(t) = &r.copy_to {
            if t.get_ref() == name || !cfg.repository.contains_key(t.get_ref()) {
                return Err(at_line(
                    t.span(),
                    format!(
                        "repository {name}: copy_to must name another [repository.NAME] section, not {:?}",
                        t.get_ref()
                    ),
                ));
            }
        }
        if r.password.is_some() && !r.allow_inline_password {
            return Err(at(format!(
                "repository {name}: an inline password is refused (it ends up in backups of /etc and in ps-visible copies); use password_file, or set allow_inline_password = true"
            )));
        }
    }
    for s in &cfg.source {
        if let Some(k) = s.unknown.keys().next() {
            let msg = format!("source {}: unknown field `{k}`", s.name);
            return Err(match key_line(&text, &s.name, k) {
                Some(l) => anyhow!("{}:{l}: {msg}", path.display()),
                None => at(msg),
            });
        }
        s.target().map_err(|e| at(e.to_string()))?;
        s.max_age_secs()
            .map_err(|e| at(format!("source {}: max_age: {e}", s.name)))?;
        s.following().map_err(|e| at(format!("{e:#}")))?;
        s.physical_wait().map_err(|e| at(format!("{e:#}")))?;
        if let Some(r) = &s.retention {
            r.policy()
                .map_err(|e| at(format!("source {}: {e}", s.name)))?;
        }
        if let Err(e) = cfg.repo_of(s) {
            return Err(match &s.repository {
                Some(r) => at_line(r.span(), e.to_string()),
                None => at(e.to_string()),
            });
        }
    }
    if let Some(r) = &cfg.retention {
        r.policy().map_err(|e| at(e.to_string()))?;
    }
    for (what, sch) in [("prune", &cfg.prune), ("check", &cfg.check)] {
        if let Some(e) = sch.as_ref().and_then(|s| s.every.as_deref()) {
            Span::parse(e).map_err(|err| at(format!("[{what}] every: {err}")))?;
        }
    }
    Ok(cfg)
}

/// The line of key `key` in the `[[source]]` whose name is `name` (the first line after
/// that name that sets it): serde's flatten keeps no position for keys no field took.
fn key_line(text: &str, name: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let sets = |l: &str, k: &str| {
        l.trim_start()
            .strip_prefix(k)
            .is_some_and(|r| r.trim_start().starts_with('='))
    };
    let named = lines.iter().position(|l| {
        sets(l, "name")
            && l.split_once('=')
                .is_some_and(|(_, v)| v.trim().trim_matches('"') == name)
    })?;
    let start = lines[..named]
        .iter()
        .rposition(|l| l.trim_start().starts_with("[[source]]"))
        .unwrap_or(0);
    (start..lines.len())
        .take_while(|&i| i <= named || !lines[i].trim_start().starts_with('['))
        .find(|&i| sets(lines[i], key))
        .map(|i| i + 1)
}

impl Config {
    /// The sources that go to repository `rname` (only `job`, when given).
    pub fn sources_in(&self, rname: &str, job: Option<&str>) -> Vec<&Source> {
        self.source
            .iter()
            .filter(|s| self.repo_of(s).is_ok_and(|r| r == rname))
            .filter(|s| job.is_none_or(|j| s.name == j))
            .collect()
    }

    /// The repository a source goes to.
    pub fn repo_of(&self, s: &Source) -> Result<&str> {
        match s.repository.as_ref().map(|r| r.get_ref()) {
            Some(r) => match self.repository.get_key_value(r) {
                Some((k, _)) => Ok(k),
                None => bail!("source {}: no repository named {r:?}", s.name),
            },
            None => {
                // A repository that only receives copies is no default for sources.
                let targets: Vec<&str> = self
                    .repository
                    .values()
                    .filter_map(|r| r.copy_to.as_ref().map(|t| t.get_ref().as_str()))
                    .collect();
                let mut own = self
                    .repository
                    .keys()
                    .filter(|k| !targets.contains(&k.as_str()));
                match (own.next(), own.next()) {
                    (Some(only), None) => Ok(only),
                    _ => bail!(
                        "source {}: several repositories are configured; say which with repository = \"NAME\"",
                        s.name
                    ),
                }
            }
        }
    }

    /// The retention policy of a source, if any.
    pub fn policy_of(&self, s: &Source) -> Result<Option<Policy>> {
        Ok(s.retention
            .as_ref()
            .or(self.retention.as_ref())
            .map(Retention::policy)
            .transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let cfg: Config =
            toml::from_str(include_str!("../../contrib/dbvault.toml")).expect("parse");
        assert_eq!(cfg.source.len(), 2);
        assert!(cfg
            .policy_of(&cfg.source[1])
            .expect("policy")
            .is_some_and(|p| p.daily == 14));
        assert_eq!(cfg.repo_of(&cfg.source[0]).expect("repo"), "main");
    }

    /// The selection keys are the `Selection` type's own; a key no field takes is an
    /// error naming the source and its line (a typo must not widen a selective backup).
    #[test]
    fn selections_parse_and_unknown_source_keys_name_their_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").expect("pw");
        let head = format!(
            "[repository.main]\nurl = \"/r\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let good = format!("{head}\n[[source]]\nname = \"a\"\npostgres = \"postgres:///a\"\ntable = [\"t*\"]\nexclude_table_data = [\"logs\"]\nschema_only = true\nrepository = \"main\"\n");
        let f = dir.path().join("good.toml");
        std::fs::write(&f, good).expect("write");
        let cfg = load(&f).expect("load");
        let sel = cfg.source[0].selection();
        assert_eq!(sel.table, ["t*"]);
        assert_eq!(sel.exclude_table_data, ["logs"]);
        assert!(sel.schema_only && sel.schema.is_empty());
        assert_eq!(cfg.repo_of(&cfg.source[0]).expect("repo"), "main");
        let bad = format!("{head}\n[[source]]\nname = \"a\"\nsqlite = \"/a.db\"\n\n[[source]]\nname = \"b\"\npostgres = \"postgres:///b\"\nexclude_tabel = [\"x\"]\n");
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, bad).expect("write");
        let e = load(&f).expect_err("typo").to_string();
        assert!(
            e.ends_with(":12: source b: unknown field `exclude_tabel`"),
            "{e}"
        );
        // A source's own keys keep their position beside the flattened selection.
        let f = dir.path().join("repo.toml");
        std::fs::write(
            &f,
            format!(
                "{head}\n[[source]]\nname = \"a\"\nsqlite = \"/a.db\"\nrepository = \"offsite\"\n"
            ),
        )
        .expect("write");
        let e = load(&f).expect_err("no such repository").to_string();
        assert!(
            e.ends_with(":8: source a: no repository named \"offsite\""),
            "{e}"
        );
    }
}
