//! Backup selections with pg_dump's options and meaning: `--table`, `--exclude-table`,
//! `--exclude-table-data`, `--schema`, `--exclude-schema`, `--schema-only`.
//!
//! pg_dump decides what a selective direct backup holds: the selection is passed to both
//! of its runs (pre-data, and data plus post-data), and a table's rows are copied only
//! when pg_dump's own pre-data created the table. dbvault matches patterns itself only for
//! `--exclude-table-data` (and for extension configuration tables, whose definitions no
//! dump holds), with pg_dump's rules (`processSQLNamePattern`): `*` and `?` are wildcards,
//! unquoted letters fold to lower case, double quotes keep case and make `*`, `?` and `.`
//! literal, `schema.table` splits on an unquoted dot, and an unqualified pattern matches
//! the tables the role's search path makes visible. Whatever pg_dump would dump that no
//! COPY took (a rule dbvault does not know) still arrives through its data run.
//!
//! The selection is recorded in the snapshot (the pre-data part's meta, by this type), so
//! `restore` and `ls` can say the snapshot is not the whole database.

use std::collections::{BTreeMap, HashSet};

use dbvault_core::{Part, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::postgres::conn::rows;
use crate::postgres::meta::PRE_DATA;

/// What a direct backup selects, with pg_dump's option names. The same type is the
/// command line's options (feature `clap`), a configuration file's source keys and the
/// record in the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Selection {
    /// `--table`: only these tables (and sequences, views), whatever `--schema` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "clap",
        arg(
            short = 't',
            long = "table",
            value_name = "PATTERN",
            help = "Only tables (sequences, views) matching PATTERN; `--schema` is then ignored"
        )
    )]
    pub table: Vec<String>,
    /// `--exclude-table`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "clap",
        arg(
            short = 'T',
            long = "exclude-table",
            value_name = "PATTERN",
            help = "Leave out tables matching PATTERN"
        )
    )]
    pub exclude_table: Vec<String>,
    /// `--exclude-table-data`: the table's definition, not its rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "exclude-table-data",
            value_name = "PATTERN",
            help = "Keep the definition of tables matching PATTERN but not their rows"
        )
    )]
    pub exclude_table_data: Vec<String>,
    /// `--schema`: only these schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "clap",
        arg(
            short = 'n',
            long = "schema",
            value_name = "PATTERN",
            help = "Only schemas matching PATTERN"
        )
    )]
    pub schema: Vec<String>,
    /// `--exclude-schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "clap",
        arg(
            short = 'N',
            long = "exclude-schema",
            value_name = "PATTERN",
            help = "Leave out schemas matching PATTERN"
        )
    )]
    pub exclude_schema: Vec<String>,
    /// `--schema-only`: no rows, no sequence values, no large objects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            help = "Only the schema: no rows, sequence values or large objects"
        )
    )]
    pub schema_only: bool,
}

const META_KEY: &str = "selection";

impl Selection {
    /// True when nothing is selected away: the whole database.
    pub fn is_whole(&self) -> bool {
        *self == Selection::default()
    }

    /// True when `--table`, `--exclude-table`, `--schema` or `--exclude-schema` decide
    /// which objects are dumped at all.
    fn restricts_objects(&self) -> bool {
        !(self.table.is_empty()
            && self.exclude_table.is_empty()
            && self.schema.is_empty()
            && self.exclude_schema.is_empty())
    }

    /// The options, as pg_dump takes them (`--schema-only` apart: the runs are chosen by
    /// section instead).
    pub fn pg_dump_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |flag: &str, v: &[String]| {
            out.extend(v.iter().map(|p| format!("--{flag}={p}")));
        };
        add("table", &self.table);
        add("exclude-table", &self.exclude_table);
        add("exclude-table-data", &self.exclude_table_data);
        add("schema", &self.schema);
        add("exclude-schema", &self.exclude_schema);
        out
    }

    /// The options as a user would type them, for notes and messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .pg_dump_args()
            .into_iter()
            .map(|a| match a.split_once('=') {
                Some((f, v)) => format!("{f} '{v}'"),
                None => a,
            })
            .collect();
        if self.schema_only {
            parts.push("--schema-only".into());
        }
        parts.join(" ")
    }

    /// The note a selective snapshot carries.
    pub fn note(&self) -> String {
        format!(
            "selective backup ({}): it holds only part of the database",
            self.describe()
        )
    }

    /// The part meta entry that records the selection (none for a whole database).
    pub fn to_meta(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        if !self.is_whole() {
            if let Ok(v) = serde_json::to_value(self) {
                m.insert(META_KEY.to_string(), v);
            }
        }
        m
    }

    /// What a snapshot's pre-data part recorded (the whole database when nothing).
    pub fn of(snap: &Snapshot) -> Selection {
        snap.parts
            .iter()
            .find(|p: &&Part| p.kind == PRE_DATA)
            .and_then(|p| p.meta.get(META_KEY))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Checks every pattern's form (before any work is done).
    ///
    /// # Errors
    /// [`FormatError::Invalid`] naming the pattern.
    pub fn validate(&self) -> Result<()> {
        for p in self
            .table
            .iter()
            .chain(&self.exclude_table)
            .chain(&self.exclude_table_data)
        {
            name_pattern(p, 2)?;
        }
        for p in self.schema.iter().chain(&self.exclude_schema) {
            name_pattern(p, 1)?;
        }
        Ok(())
    }
}

/// A table as the backup found it: (schema, name), and whether it is an extension's
/// configuration table.
pub(crate) struct Candidate<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    pub config: bool,
}

/// Which of `tables` get their rows copied under `sel`: those pg_dump's pre-data (run
/// with the selection) created, extension configuration tables when no `--table` or
/// `--schema` narrows the dump, minus `--exclude-table-data` (and, for configuration
/// tables, `--exclude-table` and `--exclude-schema`). Returns their indices.
///
/// # Errors
/// A pattern query fails.
pub(crate) fn copied(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    sel: &Selection,
    tables: &[Candidate<'_>],
    created: &HashSet<(String, String)>,
) -> Result<Vec<usize>> {
    if sel.schema_only {
        return Ok(Vec::new());
    }
    let no_data = matching_tables(rt, c, &sel.exclude_table_data)?;
    let excluded = matching_tables(rt, c, &sel.exclude_table)?;
    let excluded_schemas = matching_schemas(rt, c, &sel.exclude_schema)?;
    let narrowed = !sel.table.is_empty() || !sel.schema.is_empty();
    let key = |t: &Candidate<'_>| (t.schema.to_string(), t.name.to_string());
    Ok(tables
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let k = key(t);
            let dumped = if t.config {
                !narrowed && !excluded.contains(&k) && !excluded_schemas.contains(t.schema)
            } else {
                !sel.restricts_objects() || created.contains(&k)
            };
            dumped && !no_data.contains(&k)
        })
        .map(|(i, _)| i)
        .collect())
}

/// Relations (tables, sequences, views, …) matching any of `patterns`, as pg_dump finds
/// them: unqualified patterns against what the role's search path makes visible.
fn matching_tables(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    patterns: &[String],
) -> Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    for p in patterns {
        let (schema, name) = split2(name_pattern(p, 2)?);
        let mut sql = "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'S', 'v', 'm', 'f', 'p')"
            .to_string();
        if let Some(re) = name.filter(|r| r != ".*") {
            sql.push_str(&format!(" AND c.relname ~ {}", literal(&anchored(&re))));
        }
        match schema {
            Some(re) if re != ".*" => {
                sql.push_str(&format!(" AND n.nspname ~ {}", literal(&anchored(&re))));
            }
            Some(_) => {}
            None => sql.push_str(" AND pg_catalog.pg_table_is_visible(c.oid)"),
        }
        for r in rows(rt, c, &sql)? {
            out.insert((
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            ));
        }
    }
    Ok(out)
}

fn matching_schemas(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    patterns: &[String],
) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for p in patterns {
        let parts = name_pattern(p, 1)?;
        let re = parts
            .last()
            .cloned()
            .flatten()
            .unwrap_or_else(|| ".*".into());
        let sql = format!(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname ~ {}",
            literal(&anchored(&re))
        );
        for r in rows(rt, c, &sql)? {
            out.insert(r[0].clone().unwrap_or_default());
        }
    }
    Ok(out)
}

fn split2(mut parts: Vec<Option<String>>) -> (Option<String>, Option<String>) {
    let name = parts.pop().flatten();
    let schema = parts.pop().flatten();
    (schema, name)
}

fn anchored(re: &str) -> String {
    format!("^({re})$")
}

/// An SQL string literal (E'' form, so backslashes mean the same whatever
/// `standard_conforming_strings` says).
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// pg_dump's `processSQLNamePattern` for a name of at most `max_parts` dotted parts (a
/// database name may come first, as pg_dump allows, but only the current one means
/// anything): each part as a POSIX regex, `None` for an absent part. `force_escape` as
/// pg_dump passes it: regex characters are always literal.
///
/// # Errors
/// [`FormatError::Invalid`] for too many dotted parts or an unclosed quote.
pub(crate) fn name_pattern(pattern: &str, max_parts: usize) -> Result<Vec<Option<String>>> {
    let mut parts: Vec<String> = vec![String::new()];
    let mut in_quotes = false;
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        let cur = parts.last_mut().expect("one part at least");
        match ch {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => in_quotes = !in_quotes,
            c if !in_quotes && c.is_ascii_uppercase() => cur.push(c.to_ascii_lowercase()),
            '*' if !in_quotes => cur.push_str(".*"),
            '?' if !in_quotes => cur.push('.'),
            '.' if !in_quotes => parts.push(String::new()),
            c => {
                if "|*+?()[]{}.^$\\".contains(c) {
                    cur.push('\\');
                }
                cur.push(c);
            }
        }
    }
    if in_quotes {
        return Err(FormatError::Invalid(format!(
            "pattern {pattern:?}: unclosed double quote"
        )));
    }
    // A database part (one more than asked) is dropped; pg_dump requires it to be the
    // current database, and so does the pre-data run that gets the same pattern.
    if parts.len() > max_parts + 1 {
        return Err(FormatError::Invalid(format!(
            "pattern {pattern:?}: improper qualified name (too many dotted names)"
        )));
    }
    if parts.len() == max_parts + 1 {
        parts.remove(0);
    }
    let mut out: Vec<Option<String>> = vec![None; max_parts - parts.len()];
    out.extend(parts.into_iter().map(Some));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> (Option<String>, Option<String>) {
        split2(name_pattern(p, 2).expect("pattern"))
    }

    #[test]
    fn patterns_follow_pg_dumps_rules() {
        assert_eq!(pat("orders"), (None, Some("orders".into())));
        assert_eq!(pat("Orders"), (None, Some("orders".into())));
        assert_eq!(pat("\"Orders\""), (None, Some("Orders".into())));
        assert_eq!(
            pat("public.ord*"),
            (Some("public".into()), Some("ord.*".into()))
        );
        assert_eq!(pat("app.?x"), (Some("app".into()), Some(".x".into())));
        assert_eq!(pat("\"a.b\".c"), (Some("a\\.b".into()), Some("c".into())));
        assert_eq!(pat("\"x*\""), (None, Some("x\\*".into())));
        assert_eq!(pat("\"say \"\"hi\"\"\""), (None, Some("say \"hi\"".into())));
        assert_eq!(pat("a$b"), (None, Some("a\\$b".into())));
        assert_eq!(
            pat("shop.public.t"),
            (Some("public".into()), Some("t".into()))
        );
        assert!(name_pattern("a.b.c.d", 2).is_err());
        assert!(name_pattern("\"open", 2).is_err());
        assert_eq!(
            name_pattern("app", 1).expect("schema"),
            vec![Some("app".into())]
        );
    }

    #[test]
    fn a_selection_is_recorded_and_described() {
        let s = Selection {
            table: vec!["public.orders*".into()],
            exclude_table_data: vec!["audit.*".into()],
            ..Selection::default()
        };
        assert!(!s.is_whole());
        assert_eq!(
            s.describe(),
            "--table 'public.orders*' --exclude-table-data 'audit.*'"
        );
        assert_eq!(Selection::default().to_meta().len(), 0);
        let v = s.to_meta();
        let back: Selection = serde_json::from_value(v[META_KEY].clone()).expect("json");
        assert_eq!(back, s);
        assert_eq!(literal("a'b\\c"), "E'a''b\\\\c'");
    }
}
