//! The data-section entries a direct backup writes itself, in pg_dump's form, when its
//! pg_dump data run had to exclude every table's data with one pattern (so that run left
//! out sequence values and materialized-view refreshes too): `SEQUENCE SET` for every
//! sequence and `MATERIALIZED VIEW DATA` for every populated materialized view the dump
//! holds.

use crate::error::Result;
use crate::postgres::conn::rows;
use crate::postgres::ident::qualified;

/// Materialized views whose data pg_dump would refresh: only needed when the data run
/// excluded every table by pattern (which excludes these refreshes too).
const MATVIEWS_SQL: &str =
    "SELECT schemaname, matviewname, matviewowner FROM pg_matviews WHERE ispopulated \
  ORDER BY schemaname COLLATE \"C\", matviewname COLLATE \"C\"";

/// Sequence values: as for [`MATVIEWS_SQL`].
const SEQUENCES_SQL: &str =
    "SELECT schemaname, sequencename, sequenceowner, last_value IS NOT NULL, \
  coalesce(last_value, start_value) FROM pg_sequences \
  WHERE schemaname <> 'information_schema' AND schemaname NOT LIKE 'pg\\_%' \
  ORDER BY schemaname COLLATE \"C\", sequencename COLLATE \"C\"";

/// One entry per row of `sql` (schema, name, owner, then what `body` reads) that the dump
/// holds, in pg_dump's form: the TOC comment for `kind`, then `body`'s statement.
fn entries(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    sql: &str,
    kind: &str,
    dumped: &dyn Fn(&str, &str) -> bool,
    body: impl Fn(&str, &str, &[Option<String>]) -> String,
) -> Result<String> {
    let mut out = String::new();
    for r in rows(rt, c, sql)? {
        let (schema, name, owner) = (
            r[0].as_deref().unwrap_or(""),
            r[1].as_deref().unwrap_or(""),
            r[2].as_deref().unwrap_or(""),
        );
        if dumped(schema, name) {
            out.push_str(&format!(
                "--\n-- Name: {name}; Type: {kind}; Schema: {schema}; Owner: {owner}\n--\n\n{}\n\n\n",
                body(schema, name, &r)
            ));
        }
    }
    Ok(out)
}

/// `SEQUENCE SET` entries for every sequence the dump holds.
pub(crate) fn sequence_sets(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    dumped: &dyn Fn(&str, &str) -> bool,
) -> Result<String> {
    entries(
        rt,
        c,
        SEQUENCES_SQL,
        "SEQUENCE SET",
        dumped,
        |schema, name, r| {
            let (called, value) = (r[3].as_deref() == Some("t"), r[4].as_deref().unwrap_or("1"));
            let lit = qualified(schema, name).replace('\'', "''");
            format!("SELECT pg_catalog.setval('{lit}', {value}, {called});")
        },
    )
}

/// `MATERIALIZED VIEW DATA` entries for every populated materialized view the dump holds.
pub(crate) fn matview_refreshes(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    dumped: &dyn Fn(&str, &str) -> bool,
) -> Result<String> {
    entries(
        rt,
        c,
        MATVIEWS_SQL,
        "MATERIALIZED VIEW DATA",
        dumped,
        |schema, name, _| format!("REFRESH MATERIALIZED VIEW {};", qualified(schema, name)),
    )
}
