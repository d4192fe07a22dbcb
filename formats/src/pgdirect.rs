//! Direct PostgreSQL backups: one consistent snapshot, tables copied in parallel.
//!
//! A first connection opens a REPEATABLE READ transaction and exports its snapshot. The
//! schema comes from `pg_dump --schema-only --snapshot=…` (pre-data and post-data); every
//! table's rows come from `COPY … TO STDOUT` on worker connections that adopt the same
//! snapshot, so all tables are read as of one instant. The parts have the same shape as a
//! piped pg_dump (pre-data, `schema.table` parts in pg_dump's text form, post-data with
//! the sequence values), so restores treat both alike.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;

use dbvault_core::backup::{Backup, Chunking, PartInput};
use dbvault_core::SourceInfo;
use futures_util::StreamExt;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use crate::error::{FormatError, Result};
use crate::pgdump::{SCHEMA_CHUNKS, TABLE_CHUNKS};
use crate::pgscript::{entries, qualified};

pub(crate) fn pg_err(context: &str, e: tokio_postgres::Error) -> FormatError {
    // tokio-postgres messages carry the server's text ("FATAL: …"), never the password.
    let mut msg = e.to_string();
    if let Some(db) = e.as_db_error() {
        msg = format!("{}: {}", db.severity(), db.message());
    } else if let Some(src) = std::error::Error::source(&e) {
        msg = format!("{msg}: {src}");
    }
    FormatError::Sqlite {
        context: context.to_string(),
        message: msg,
    }
}

/// Connection settings resolved from a URL plus the libpq `PG*` variables.
#[derive(Clone)]
pub struct PgSource {
    config: Config,
}

impl PgSource {
    /// Parses a `postgres://` URL; missing pieces come from `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGDATABASE`, then libpq's defaults (local socket, OS user).
    ///
    /// # Errors
    /// A URL tokio-postgres cannot parse.
    pub fn parse(url: &str) -> Result<PgSource> {
        let mut config = Config::from_str(url).map_err(|e| FormatError::Sqlite {
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
                    let out = Command::new("id").arg("-un").output().ok()?;
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
        Ok(PgSource { config })
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

    /// A command for a libpq tool (pg_dump) with the connection in its environment, so
    /// no password ever appears in an argument list.
    /// The same server and credentials, another database.
    pub fn for_database(&self, db: &str) -> PgSource {
        let mut config = self.config.clone();
        config.dbname(db);
        PgSource { config }
    }

    pub(crate) fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(crate::pgtools::program(program));
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

struct Table {
    schema: String,
    name: String,
    owner: String,
    columns: String,
    pages: u64,
}

const TABLES_SQL: &str = "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), \
  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a \
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
  c.relpages \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
  ORDER BY n.nspname COLLATE \"C\", c.relname COLLATE \"C\"";

/// Materialized views whose data pg_dump would refresh (a data-section entry that
/// `--schema-only` leaves out).
const MATVIEWS_SQL: &str =
    "SELECT schemaname, matviewname, matviewowner FROM pg_matviews WHERE ispopulated \
  ORDER BY schemaname COLLATE \"C\", matviewname COLLATE \"C\"";

const SEQUENCES_SQL: &str =
    "SELECT schemaname, sequencename, sequenceowner, last_value IS NOT NULL, \
  coalesce(last_value, start_value) FROM pg_sequences \
  WHERE schemaname <> 'information_schema' AND schemaname NOT LIKE 'pg\\_%' \
  ORDER BY schemaname COLLATE \"C\", sequencename COLLATE \"C\"";

/// Rows and hash of one table's COPY text, filled while it streams.
struct CopyStats {
    rows: u64,
    hasher: dbvault_core::hash::AlignedHasher,
}

/// Reads a COPY stream through a runtime, in pg_dump's text form (header, rows, `\.`).
struct CopyReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    head: std::io::Cursor<Vec<u8>>,
    data: Vec<u8>,
    pos: usize,
    tail: Option<std::io::Cursor<Vec<u8>>>,
    stats: &'a std::cell::RefCell<CopyStats>,
    table: String,
}

impl Read for CopyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(out)?;
        if n > 0 {
            return Ok(n);
        }
        loop {
            if self.pos < self.data.len() {
                let k = (self.data.len() - self.pos).min(out.len());
                out[..k].copy_from_slice(&self.data[self.pos..self.pos + k]);
                self.pos += k;
                return Ok(k);
            }
            if let Some(t) = self.tail.as_mut() {
                return t.read(out);
            }
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(bytes)) => {
                    let mut st = self.stats.borrow_mut();
                    st.rows += memchr::memchr_iter(b'\n', &bytes).count() as u64;
                    st.hasher.update(&bytes);
                    self.data.clear();
                    self.data.extend_from_slice(&bytes);
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "COPY of {} failed: {e}",
                        self.table
                    )))
                }
                None => self.tail = Some(std::io::Cursor::new(b"\\.\n\n\n".to_vec())),
            }
        }
    }
}

fn run_pg_dump(src: &PgSource, snapshot: &str, section: &str) -> Result<String> {
    let out = src
        .tool("pg_dump")
        .args([
            "--schema-only",
            "--section",
            section,
            "--snapshot",
            snapshot,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FormatError::io("pg_dump (apt-get install postgresql-client)", e))?;
    if !out.status.success() {
        return Err(FormatError::Sqlite {
            context: format!("pg_dump --section {section}"),
            message: String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
                .to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops a script's closing block (`-- PostgreSQL database dump complete`, `\unrestrict`).
fn without_closing(text: &str) -> String {
    let mut es = entries(text);
    if es.len() > 1 && es.last().is_some_and(|e| e.header.is_none()) {
        es.pop();
    }
    es.into_iter().map(|e| e.text).collect()
}

/// Backs up a database into `b` with `jobs` parallel COPY connections. Returns the
/// snapshot's source description.
///
/// # Errors
/// Connection, query, COPY or pg_dump failures (then the caller aborts the backup and no
/// snapshot is recorded).
pub fn backup(b: &Backup<'_>, src: &PgSource, jobs: usize) -> Result<SourceInfo> {
    let rt = runtime()?;
    let main = src.connect(&rt)?;
    rt.block_on(main.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        .map_err(|e| pg_err("BEGIN", e))?;
    let first = |sql: &str| -> Result<String> {
        Ok(rows(&rt, &main, sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_default())
    };
    let snapshot = first("SELECT pg_export_snapshot()")?;
    let version = first("SHOW server_version")?;
    let mut tables: Vec<Table> = rows(&rt, &main, TABLES_SQL)?
        .into_iter()
        .map(|r| Table {
            schema: r[0].clone().unwrap_or_default(),
            name: r[1].clone().unwrap_or_default(),
            owner: r[2].clone().unwrap_or_default(),
            columns: r[3].clone().unwrap_or_default(),
            pages: r[4].as_deref().and_then(|p| p.parse().ok()).unwrap_or(0),
        })
        .collect();
    let sequences = rows(&rt, &main, SEQUENCES_SQL)?;
    let matviews = rows(&rt, &main, MATVIEWS_SQL)?;

    // Pre-data first, so the snapshot's parts read in restore order.
    let pre = without_closing(&run_pg_dump(src, &snapshot, "pre-data")?);
    let restrict_key = entries(&pre).first().and_then(|e| {
        e.text
            .lines()
            .find_map(|l| l.strip_prefix("\\restrict ").map(|k| k.trim().to_string()))
    });
    b.add_part(
        PartInput {
            name: "pre-data".into(),
            kind: "pre-data".into(),
            chunking: Chunking::Lines(SCHEMA_CHUNKS),
            ..Default::default()
        },
        pre.as_bytes(),
    )?;
    // Largest first (popped from the end): parallel copies end together.
    let order: Vec<usize> = {
        let mut idx: Vec<usize> = (0..tables.len()).collect();
        idx.sort_by_key(|&i| tables[i].pages);
        idx
    };
    let queue = Mutex::new(order);
    let post_dump = std::thread::scope(|s| -> Result<String> {
        let post = s.spawn(|| run_pg_dump(src, &snapshot, "post-data"));
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| s.spawn(|| copy_worker(b, src, &snapshot, &tables, &queue)))
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| FormatError::io("copy worker", std::io::Error::other("panicked")))??;
        }
        post.join()
            .map_err(|_| FormatError::io("pg_dump", std::io::Error::other("panicked")))?
    })?;
    tables.clear();

    // Post-data: sequence values (data that --schema-only leaves out), then pg_dump's
    // post-data entries, then the closing block under the pre-data's restriction key.
    let mut post = String::new();
    for r in &sequences {
        let (schema, name, owner) = (
            r[0].as_deref().unwrap_or(""),
            r[1].as_deref().unwrap_or(""),
            r[2].as_deref().unwrap_or(""),
        );
        let (called, value) = (r[3].as_deref() == Some("t"), r[4].as_deref().unwrap_or("1"));
        let lit = qualified(schema, name).replace('\'', "''");
        post.push_str(&format!(
            "--\n-- Name: {name}; Type: SEQUENCE SET; Schema: {schema}; Owner: {owner}\n--\n\nSELECT pg_catalog.setval('{lit}', {value}, {called});\n\n\n"
        ));
    }
    let post_entries = entries(&without_closing(&post_dump));
    post.extend(post_entries.into_iter().skip(1).map(|e| e.text));
    for r in &matviews {
        let (schema, name, owner) = (
            r[0].as_deref().unwrap_or(""),
            r[1].as_deref().unwrap_or(""),
            r[2].as_deref().unwrap_or(""),
        );
        post.push_str(&format!(
            "--\n-- Name: {name}; Type: MATERIALIZED VIEW DATA; Schema: {schema}; Owner: {owner}\n--\n\nREFRESH MATERIALIZED VIEW {};\n\n\n",
            qualified(schema, name)
        ));
    }
    post.push_str("--\n-- PostgreSQL database dump complete\n--\n\n");
    if let Some(k) = restrict_key {
        post.push_str(&format!("\\unrestrict {k}\n\n"));
    }
    b.add_part(
        PartInput {
            name: "post-data".into(),
            kind: "post-data".into(),
            chunking: Chunking::Lines(SCHEMA_CHUNKS),
            ..Default::default()
        },
        post.as_bytes(),
    )?;
    rt.block_on(main.batch_execute("COMMIT"))
        .map_err(|e| pg_err("COMMIT", e))?;
    Ok(SourceInfo {
        kind: "postgres".into(),
        identity: src.describe(),
        format: "pg_dump".into(),
        server_version: Some(version),
    })
}

fn copy_worker(
    b: &Backup<'_>,
    src: &PgSource,
    snapshot: &str,
    tables: &[Table],
    queue: &Mutex<Vec<usize>>,
) -> Result<()> {
    let rt = runtime()?;
    let c = src.connect(&rt)?;
    let setup = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    );
    rt.block_on(c.batch_execute(&setup))
        .map_err(|e| pg_err("adopting the exported snapshot", e))?;
    loop {
        let next = queue
            .lock()
            .map_err(|_| FormatError::io("queue", std::io::Error::other("poisoned")))?
            .pop();
        let Some(i) = next else { break };
        let t = &tables[i];
        let q = qualified(&t.schema, &t.name);
        let cols = if t.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.columns)
        };
        let copy_line = format!("COPY {q}{cols} FROM stdin;");
        let head = format!(
            "--\n-- Data for Name: {}; Type: TABLE DATA; Schema: {}; Owner: {}\n--\n\n{copy_line}\n",
            t.name, t.schema, t.owner
        );
        let stream = rt
            .block_on(c.copy_out(&format!("COPY {q}{cols} TO STDOUT")))
            .map_err(|e| pg_err(&format!("COPY {q} TO STDOUT"), e))?;
        let stats = std::cell::RefCell::new(CopyStats {
            rows: 0,
            hasher: dbvault_core::hash::AlignedHasher::default(),
        });
        let reader = CopyReader {
            rt: &rt,
            stream: Box::pin(stream),
            head: std::io::Cursor::new(head.into_bytes()),
            data: Vec::new(),
            pos: 0,
            tail: None,
            stats: &stats,
            table: q.clone(),
        };
        b.add_part_then(
            &format!("{}.{}", t.schema, t.name),
            Chunking::Lines(TABLE_CHUNKS),
            reader,
            || {
                let st = stats.borrow();
                let (rows, hash) = (st.rows, st.hasher.finalize().to_hex().to_string());
                let mut meta = BTreeMap::new();
                meta.insert("schema".into(), serde_json::json!(t.schema));
                meta.insert("table".into(), serde_json::json!(t.name));
                meta.insert("copy_blake3".into(), serde_json::json!(hash));
                meta.insert("copy".into(), serde_json::json!(copy_line));
                PartInput {
                    name: format!("{}.{}", t.schema, t.name),
                    kind: "table-data".into(),
                    rows: Some(rows),
                    meta,
                    chunking: Chunking::Lines(TABLE_CHUNKS),
                }
            },
        )
        .map_err(FormatError::Core)?;
    }
    rt.block_on(c.batch_execute("COMMIT"))
        .map_err(|e| pg_err("COMMIT", e))?;
    Ok(())
}
