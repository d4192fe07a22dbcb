//! What a whole-database restore creates, read from the dump's pre-data: to refuse a
//! target that already holds any of it (before changing anything), and for `--clean` to
//! drop it first, as `pg_restore --clean --if-exists` does.

use super::conn::PgSource;
use crate::error::{FormatError, Result};

/// One object the pre-data creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// pg_dump's type: `TABLE`, `VIEW`, `FUNCTION`, …
    pub kind: String,
    /// The name as SQL takes it: qualified and quoted where needed (a function with its
    /// argument types).
    pub sql_name: String,
    /// A function's schema, name and identity arguments as pg_dump's header gives them
    /// (matched against `pg_get_function_identity_arguments`, which names arguments).
    pub routine: Option<(String, String, String)>,
}

/// How each kind is looked up and dropped: (pg_dump's type, DROP keyword, lookup
/// function, drop with CASCADE). Relations cascade so that the foreign keys, defaults
/// and views resting on them (which the snapshot creates again) go with them.
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("TABLE", "TABLE", "to_regclass", true),
    ("FOREIGN TABLE", "FOREIGN TABLE", "to_regclass", true),
    ("VIEW", "VIEW", "to_regclass", true),
    (
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW",
        "to_regclass",
        true,
    ),
    ("SEQUENCE", "SEQUENCE", "to_regclass", true),
    ("FUNCTION", "FUNCTION", "to_regprocedure", false),
    ("PROCEDURE", "PROCEDURE", "to_regprocedure", false),
    ("AGGREGATE", "AGGREGATE", "to_regprocedure", false),
    ("TYPE", "TYPE", "to_regtype", false),
    ("DOMAIN", "DOMAIN", "to_regtype", false),
    ("SCHEMA", "SCHEMA", "to_regnamespace", false),
];

fn kind_of(kind: &str) -> Option<&'static (&'static str, &'static str, &'static str, bool)> {
    KINDS.iter().find(|k| k.0 == kind)
}

/// `"name"` with inner quotes doubled.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The qualified name at the start of `s` (`a.b`, `"A b"."c"`), as written.
fn leading_name(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            let start = i;
            while b.get(i).is_some_and(|c| {
                c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c >= 0x80
            }) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return s.get(..i);
        }
    }
}

/// The objects `pre_data` creates, in the order it creates them. Read from pg_dump's
/// `-- Name: …; Type: …; Schema: …` headers and the `CREATE` statement after each (its
/// name is quoted as SQL needs it; a function's identity arguments come from the header).
/// Objects a dump creates only if missing (`CREATE EXTENSION IF NOT EXISTS`) are left out.
pub fn created(pre_data: &str) -> Vec<Created> {
    let mut out = Vec::new();
    let mut header: Option<(String, String, String)> = None;
    for line in pre_data.lines() {
        if let Some(h) = line.strip_prefix("-- Name: ") {
            let mut name = None;
            let mut kind = None;
            let mut schema = None;
            if let Some((n, tail)) = h.split_once("; Type: ") {
                name = Some(n.to_string());
                let mut parts = tail.split("; ");
                kind = parts.next().map(str::to_string);
                for p in parts {
                    if let Some(s) = p.strip_prefix("Schema: ") {
                        schema = Some(s.to_string());
                    }
                }
            }
            header = match (name, kind) {
                (Some(n), Some(k)) => Some((n, k, schema.unwrap_or_else(|| "-".into()))),
                _ => None,
            };
            continue;
        }
        if line.starts_with("--") || line.trim().is_empty() {
            continue;
        }
        let Some((name, kind, schema)) = header.take() else {
            continue;
        };
        let Some(k) = kind_of(&kind) else { continue };
        let stmt = line.trim_start();
        let Some(after) = stmt.strip_prefix("CREATE ") else {
            continue;
        };
        let after = after.strip_prefix("UNLOGGED ").unwrap_or(after);
        let after = after.strip_prefix("OR REPLACE ").unwrap_or(after);
        let Some(after) = after.strip_prefix(k.0).and_then(|a| a.strip_prefix(' ')) else {
            continue;
        };
        if after.starts_with("IF NOT EXISTS") {
            continue;
        }
        let (sql_name, routine) = if k.2 == "to_regprocedure" {
            // The header's `name(args)`: identity arguments, no defaults.
            let Some((fname, args)) = name.split_once('(') else {
                continue;
            };
            let args = args.strip_suffix(')').unwrap_or(args);
            (
                format!("{}.{}({args})", quote(&schema), quote(fname)),
                Some((schema, fname.to_string(), args.to_string())),
            )
        } else {
            match leading_name(after) {
                Some(n) => (n.to_string(), None),
                None => continue,
            }
        };
        out.push(Created {
            kind,
            sql_name,
            routine,
        });
    }
    out
}

/// Those of `objects` that `db` holds already, as `kind name` for messages.
///
/// # Errors
/// The server's error.
pub fn existing(db: &PgSource, objects: &[Created]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    // One query per few hundred objects: a statement stays small.
    for batch in objects.chunks(200) {
        let probes: Vec<String> = batch
            .iter()
            .filter_map(|o| {
                let k = kind_of(&o.kind)?;
                let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
                Some(match &o.routine {
                    Some((schema, name, args)) => format!(
                        "(EXISTS (SELECT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                         WHERE n.nspname = {} AND p.proname = {} AND pg_get_function_identity_arguments(p.oid) = {}))::text",
                        lit(schema),
                        lit(name),
                        lit(args)
                    ),
                    None => format!("({}({}) IS NOT NULL)::text", k.2, lit(&o.sql_name)),
                })
            })
            .collect();
        if probes.is_empty() {
            continue;
        }
        // Each probe a boolean as text: the row reads true|false|…
        let sql = format!("SELECT {}", probes.join(" || '|' || "));
        let row = db.query(&sql)?;
        for (o, v) in batch.iter().zip(row.split('|')) {
            if v == "true" || v == "t" {
                found.push(format!("{} {}", o.kind.to_lowercase(), o.sql_name));
            }
        }
    }
    Ok(found)
}

/// The script that drops `objects` (newest first, so that what rests on an object goes
/// before it), each `IF EXISTS`.
pub fn drop_script(objects: &[Created]) -> String {
    let mut s = String::new();
    for o in objects.iter().rev() {
        if let Some(k) = kind_of(&o.kind) {
            s.push_str(&format!(
                "DROP {} IF EXISTS {}{};\n",
                k.1,
                o.sql_name,
                if k.3 { " CASCADE" } else { "" }
            ));
        }
    }
    s
}

/// Refuses a target that holds what the restore creates, unless `clean`: then drops it,
/// in one transaction.
///
/// # Errors
/// [`FormatError::Invalid`] listing what is in the way; the server's errors.
pub fn prepare(db: &PgSource, pre_data: &str, clean: bool) -> Result<usize> {
    let objects = created(pre_data);
    let there = existing(db, &objects)?;
    if there.is_empty() {
        return Ok(0);
    }
    if !clean {
        let shown: Vec<&str> = there.iter().take(8).map(String::as_str).collect();
        let more = there.len().saturating_sub(shown.len());
        return Err(FormatError::Invalid(format!(
            "{} already holds {} object(s) this snapshot creates: {}{}; nothing was changed. \
             --clean drops them first (as pg_restore --clean), or restore into a new database (--create makes it)",
            db.public(),
            there.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        )));
    }
    let script = drop_script(&objects);
    db.psql("dropping what the snapshot creates (--clean)", true, |w| {
        Ok(w.write_all(script.as_bytes())?)
    })?;
    Ok(there.len())
}

/// Creates the database `db` names, from `template0`, when it does not exist (`--create`,
/// as pg_restore's): through the server's `postgres` database.
///
/// # Errors
/// [`FormatError::Invalid`] when the URL names no database; the server's errors.
pub fn create_database(db: &PgSource, notify: crate::notice::Notify<'_>) -> Result<()> {
    let name = db.dbname().to_string();
    if name.is_empty() {
        return Err(FormatError::Invalid(
            "--create: the target URL names no database".into(),
        ));
    }
    let admin = db.for_database(if name == "postgres" {
        "template1"
    } else {
        "postgres"
    });
    let lit = name.replace('\'', "''");
    let exists = admin.query(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{lit}'"
    ))? != "0";
    if exists {
        return Ok(());
    }
    admin.query(&format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote(&name)
    ))?;
    notify(crate::notice::Notice::Done(format!(
        "created database {name}"
    )));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRE: &str = "--\n-- Name: app; Type: SCHEMA; Schema: -; Owner: me\n--\n\nCREATE SCHEMA app;\n\n\
--\n-- Name: plpgsql; Type: EXTENSION; Schema: -; Owner: -\n--\n\nCREATE EXTENSION IF NOT EXISTS plpgsql WITH SCHEMA pg_catalog;\n\n\
--\n-- Name: bump(integer, text); Type: FUNCTION; Schema: app; Owner: me\n--\n\nCREATE FUNCTION app.bump(a integer DEFAULT 1, b text) RETURNS integer\n\n\
--\n-- Name: Kunden Ü; Type: TABLE; Schema: Sales Dept; Owner: me\n--\n\nCREATE UNLOGGED TABLE \"Sales Dept\".\"Kunden Ü\" (\n    id integer\n);\n\n\
--\n-- Name: t_id_seq; Type: SEQUENCE; Schema: public; Owner: me\n--\n\nALTER TABLE public.t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (\n";

    #[test]
    fn the_objects_a_dump_creates_with_their_sql_names() {
        let c = created(PRE);
        assert_eq!(
            c[1].routine,
            Some(("app".into(), "bump".into(), "integer, text".into()))
        );
        let names: Vec<(&str, &str)> = c
            .iter()
            .map(|o| (o.kind.as_str(), o.sql_name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("SCHEMA", "app"),
                ("FUNCTION", "\"app\".\"bump\"(integer, text)"),
                ("TABLE", "\"Sales Dept\".\"Kunden Ü\""),
            ]
        );
        let d = drop_script(&c);
        assert_eq!(
            d,
            "DROP TABLE IF EXISTS \"Sales Dept\".\"Kunden Ü\" CASCADE;\n\
             DROP FUNCTION IF EXISTS \"app\".\"bump\"(integer, text);\n\
             DROP SCHEMA IF EXISTS app;\n"
        );
    }

    #[test]
    fn leading_names() {
        assert_eq!(leading_name("a.b (x"), Some("a.b"));
        assert_eq!(
            leading_name("\"a\"\"b\".\"c d\" AS"),
            Some("\"a\"\"b\".\"c d\"")
        );
        assert_eq!(leading_name("(x"), None);
    }
}
