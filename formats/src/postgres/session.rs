//! The session a dump's rows are read and loaded in, as pg_dump sets it up.

/// pg_dump's session settings (its `setup_connection`), so COPY writes every value as
/// pg_dump would: dates in ISO, floats exact, regclass and friends schema-qualified,
/// the dump's client encoding, no timeouts, no synchronized scans (rows in table order),
/// and row-level security off unless asked for (then a filtered table is an error).
pub fn session_sql(encoding: &str, row_security: bool) -> String {
    format!(
        "SET DATESTYLE = ISO; SET INTERVALSTYLE = POSTGRES; SET extra_float_digits TO 3; \
         SET synchronize_seqscans TO off; SET statement_timeout = 0; SET lock_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0; SET row_security = {}; \
         SELECT pg_catalog.set_config('search_path', '', false); SET client_encoding = '{}'",
        if row_security { "on" } else { "off" },
        encoding.replace('\'', "''")
    )
}

/// The client encoding a pg_dump script declares (`SET client_encoding = 'X';`).
pub fn script_encoding(script: &str) -> String {
    script
        .lines()
        .find_map(|l| l.strip_prefix("SET client_encoding = '"))
        .and_then(|r| r.split('\'').next())
        .unwrap_or("UTF8")
        .to_string()
}
