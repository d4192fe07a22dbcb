//! The options of the commands that back up, read and restore snapshots.

use std::path::PathBuf;

use clap::Args;

/// `backup` options.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// What to back up: `postgres://…` (a consistent snapshot, tables copied in parallel),
    /// `sqlite:PATH` (online backup of a live database), or `-` for stdin (a pg_dump plain
    /// dump, an SQLite file or any stream).
    #[arg(
        value_name = "SOURCE",
        required_unless_present = "command",
        conflicts_with = "command"
    )]
    pub source: Option<String>,
    /// Run CMD with `sh -c` and back up its standard output; no snapshot if it fails.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Store an empty stream (stdin or a command's output), or a 0-byte `sqlite:` file as an
    /// empty database, as a snapshot. Without it, an empty input is refused: it is what a
    /// failed producer leaves in a pipe, or a wrong path.
    #[arg(long)]
    pub allow_empty: bool,
    /// Source name: groups snapshots for `latest` and retention (default: stdin, the
    /// command's program name).
    #[arg(long)]
    pub name: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Record this time instead of now (RFC 3339, e.g. 2026-11-20T02:00:00+01:00,
    /// PostgreSQL's `2026-11-20 01:00:00+00`, or local time `2026-11-20 02:00`).
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// With a postgres:// SOURCE: every database of that server (and its roles and
    /// tablespaces, from `pg_dumpall --globals-only`) in one snapshot.
    #[arg(long)]
    pub all_databases: bool,
    /// With a postgres:// SOURCE: a base backup of the whole cluster (pg_basebackup over
    /// the replication protocol) for point-in-time recovery with the WAL that `wal-push`
    /// archives under the same --name (default `postgres`).
    #[arg(long, conflicts_with = "all_databases")]
    pub physical: bool,
    /// With --physical: how long to wait for the archive to hold the WAL the base backup
    /// needs (default 5min).
    #[arg(long, value_name = "DURATION", requires = "physical")]
    pub wal_wait: Option<String>,
    /// With --physical, on the database host: read this data directory itself (two files
    /// at a time) between pg_backup_start and pg_backup_stop, instead of receiving
    /// pg_basebackup's stream.
    #[arg(long, value_name = "DIR", requires = "physical")]
    pub pgdata: Option<PathBuf>,
    /// With a postgres:// SOURCE: store only the rows row-level security lets the role
    /// see, as `pg_dump --enable-row-security` does (the snapshot says so). Without it, a
    /// table whose rows the role would not all see stops the backup.
    #[arg(long)]
    pub enable_row_security: bool,
    /// What to select, as pg_dump's options of the same names (patterns as pg_dump takes
    /// them: `*`, `?`, `schema.table`, double quotes for case; each repeatable). The
    /// snapshot records the selection and says it is not the whole database.
    #[command(flatten)]
    pub selection: dbvault_formats::postgres::Selection,
    /// Parallel COPY connections for a postgres:// source (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// With an `sqlite:PATH` SOURCE: keep running, and take a snapshot whenever the
    /// database changed and --interval has passed (continuous backup; stop it with a
    /// signal: a snapshot being written is then simply not recorded).
    #[arg(long)]
    pub follow: bool,
    /// With --follow: the least time between two snapshots (default 10s; units s, min, h).
    #[arg(long, value_name = "DURATION", requires = "follow")]
    pub interval: Option<String>,
    /// With --follow: keep every snapshot (default: compact them every 10 minutes by the
    /// stored policy with an hour of every snapshot and 24 hourly added; docs/sqlite.md,
    /// Continuous backup).
    #[arg(long, requires = "follow")]
    pub no_compact: bool,
    /// Format of a stream on stdin or from --command: pg_dump (plain), custom (pg_dump -Fc),
    /// sqlite or raw (detected from the first bytes when absent).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// `snapshots` options.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots taken on this host.
    #[arg(long)]
    pub host: Option<String>,
}

/// `ls` options.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// With `latest`: the latest of this source.
    #[arg(long)]
    pub name: Option<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: all of them), e.g.
    /// `--tag pre-migration-0042`.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// With `latest`: the newest snapshot taken on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// A PostgreSQL snapshot's every archive entry (kind, schema, name, owner, size,
    /// rows) as `pg_restore --list` shows them: a list file for `restore --list-file`.
    #[arg(long)]
    pub entries: bool,
}

/// `diff` options.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot: id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT_A")]
    pub a: String,
    /// The newer snapshot.
    #[arg(value_name = "SNAPSHOT_B")]
    pub b: String,
    /// With `latest`: the latest of this source.
    #[arg(long)]
    pub name: Option<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// With `latest`: the newest snapshot taken on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Also list what did not change.
    #[arg(long)]
    pub all: bool,
}

/// `sql` options.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// Snapshot: id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The query (read-only); without it, queries are read from standard input, one per
    /// line.
    #[arg(value_name = "QUERY")]
    pub query: Option<String>,
    /// With `latest`: the source name to pick from.
    #[arg(long)]
    pub name: Option<String>,
    /// With `latest`: the newest snapshot at or before this time (as `restore`).
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Rows as CSV (with a header line) instead of a table, as PostgreSQL's `\copy … FROM
    /// … CSV HEADER` loads them: NULL an empty field, an empty string `""`, a blob `\x…`
    /// (bytea's hex form).
    #[arg(long, conflicts_with = "insert")]
    pub csv: bool,
    /// Rows as SQL `INSERT INTO TABLE VALUES (…);` statements that sqlite3 loads as they
    /// are (blobs as `X'…'`), as sqlite3's `.mode insert TABLE`.
    #[arg(long, value_name = "TABLE")]
    pub insert: Option<String>,
    /// For a PostgreSQL snapshot: load this table's rows (repeatable; names as `restore
    /// --table` takes them) into a scratch SQLite database and query that (docs/postgresql.md:
    /// how types map).
    #[arg(long, short = 't', value_name = "TABLE")]
    pub table: Vec<String>,
}

/// `copy` options.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy: ids, unique id prefixes or `latest` (default: every snapshot,
    /// or with --name every snapshot of that source).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Only snapshots of this source (with `latest`: the latest of it).
    #[arg(long)]
    pub name: Option<String>,
    /// The repository to copy into: a local path, file:///path or s3://bucket/prefix. It
    /// must exist (`dbvault init` it first); its passphrase may differ.
    #[arg(long, env = "DBVAULT_TO_REPO", value_name = "URL")]
    pub to_repo: String,
    /// The target's passphrase from this file (first line). Also
    /// DBVAULT_TO_PASSWORD_FILE, else DBVAULT_TO_PASSWORD, else a prompt on the terminal.
    #[arg(long, env = "DBVAULT_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// The target's S3 endpoint, when it differs from --s3-endpoint.
    #[arg(long, value_name = "URL")]
    pub to_s3_endpoint: Option<String>,
    /// The target's S3 region, when it differs from --s3-region.
    #[arg(long, value_name = "REGION")]
    pub to_s3_region: Option<String>,
    /// Path-style addressing for the target's S3 store.
    #[arg(long)]
    pub to_s3_path_style: bool,
}

/// `restore` options.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot: id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Where to: `-` for stdout, `sqlite:PATH`, `postgres://…`, or `pgdata:DIR` (a
    /// physical snapshot's data directory, ready to recover).
    #[arg(long, value_name = "TARGET")]
    pub to: String,
    /// With `latest`: the source name to pick from.
    #[arg(long)]
    pub name: Option<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: all of them), e.g.
    /// `--tag pre-migration-0042`.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// With `latest`: the newest snapshot taken on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// With `latest`: the newest snapshot taken at or before this time (RFC 3339, e.g.
    /// 2026-12-01T14:31:00+01:00; PostgreSQL's `2026-12-01 13:31:00.123456+00`, as
    /// `SELECT now()` prints it; or `YYYY-MM-DD HH:MM[:SS]` in local time). With
    /// `--to pgdata:DIR`, also where recovery stops.
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// With `--to pgdata:DIR`: recover to this LSN (`0/16B3748`).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// With `--to pgdata:DIR`: recover to this transaction id.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// With `--to pgdata:DIR`: recover to this restore point (`pg_create_restore_point`).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// A base backup (cluster or `--table`): recover to just before this transaction
    /// committed, as `dbvault events` prints it (`recovery_target_xid` with
    /// `recovery_target_inclusive = off`).
    #[arg(long, value_name = "XID", conflicts_with_all = ["target_xid", "target_lsn", "target_time", "target_name", "before_lsn"])]
    pub before_xid: Option<String>,
    /// A base backup: recover to just before this LSN (`recovery_target_lsn`,
    /// `recovery_target_inclusive = off`).
    #[arg(long, value_name = "LSN", conflicts_with_all = ["target_xid", "target_lsn", "target_time", "target_name"])]
    pub before_lsn: Option<String>,
    /// With `--to pgdata:DIR` and a target: promote, pause or shutdown when it is reached
    /// (PostgreSQL's default: pause).
    #[arg(long, value_name = "ACTION")]
    pub target_action: Option<String>,
    /// Physical snapshots: the timeline recovery follows: `current` (the base backup's),
    /// `latest` (the newest descending from it), or a number. Default: `latest`, refused
    /// when two servers archived diverging branches into the source (then choose).
    #[arg(long, value_name = "current|latest|N")]
    pub target_timeline: Option<String>,
    /// With `--to pgdata:DIR`: `off` (the default) writes `archive_mode = off` so the
    /// restored copy never archives into the source's archive; `preserve` keeps the
    /// source's archiving settings (for a copy that replaces a lost primary).
    #[arg(long, value_name = "off|preserve", default_value = "off")]
    pub archive_mode: String,
    /// From a whole-server snapshot: the database to restore (its roles come along; it is
    /// created on the target server when missing).
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Restore only this table (repeatable).
    #[arg(long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
    /// Restore the table under this name.
    #[arg(long, value_name = "NEW")]
    pub rename_table: Option<String>,
    /// Only the schema.
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Only the data.
    #[arg(long)]
    pub data_only: bool,
    /// Overwrite an existing target file (an SQLite database is replaced through SQLite:
    /// its locks, its WAL, its owner and mode kept).
    #[arg(long)]
    pub force: bool,
    /// With --force into an SQLite database that other processes have open: go ahead,
    /// through SQLite's locks (refused otherwise, naming the processes).
    #[arg(long, requires = "force")]
    pub while_open: bool,
    /// Replace an existing table of the same name (otherwise restoring onto it is
    /// refused); for a whole database, drop what the snapshot creates first, as
    /// `pg_restore --clean --if-exists` (otherwise a database holding any of it is
    /// refused before anything changes).
    #[arg(long)]
    pub clean: bool,
    /// Into a PostgreSQL database that does not exist yet: create it (from template0).
    #[arg(long)]
    pub create: bool,
    /// With `--to -`, a snapshot of a pg_dump custom-format archive as its SQL script (as
    /// `pg_restore -f -` writes it) instead of the archive itself (or a compressed dump's
    /// plain dump instead of the compressed file).
    #[arg(long)]
    pub plain: bool,
    /// Restore only the entries this list file chooses, as `pg_restore -L`: the output of
    /// `dbvault ls SNAPSHOT --entries`, with the entries not wanted deleted or commented
    /// out with `;`. They are restored in the dump's order; a table's data brings its
    /// CREATE TABLE when the target lacks the table.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tables", "schema_only", "data_only"])]
    pub list_file: Option<std::path::PathBuf>,
    /// Into a database: the sessions loading tables and building keys at once, like
    /// `pg_restore -j` (default: the cores plus one, at most 5; 1 loads one table at a time).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

/// `check` options.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read, decrypt and re-hash every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read only part of the data: a percentage of the packs (`10` or `10%`, random each
    /// run) or slice `N/M` (run 1/12 … 12/12 monthly and a year covers everything).
    #[arg(long, value_name = "PERCENT|N/M")]
    pub read_data_subset: Option<String>,
}

/// `restore-test` options.
#[derive(Args, Debug)]
pub struct RestoreTestArgs {
    /// Snapshot: id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// With `latest`: the source name to pick from.
    #[arg(long)]
    pub name: Option<String>,
    /// PostgreSQL server for the scratch database (a URL naming a database to connect to,
    /// e.g. postgres://user@host/postgres; default: the PG* environment). Not for physical
    /// snapshots: they are recovered on a throwaway server of their own.
    #[arg(long, value_name = "URL")]
    pub scratch: Option<String>,
    /// Physical snapshots: recover to this time instead of the end of the archive.
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
}

impl RestoreArgs {
    /// Which snapshots `latest` picks from.
    pub fn filter(&self) -> dbvault_core::SnapshotFilter {
        dbvault_core::SnapshotFilter {
            name: self.name.clone(),
            host: self.host.clone(),
            tags: self.tags.clone(),
        }
    }

    /// The options a PostgreSQL restore takes from these.
    pub fn pg_options(&self) -> dbvault_formats::postgres::RestoreOptions {
        dbvault_formats::postgres::RestoreOptions {
            tables: self.tables.clone(),
            rename_table: self.rename_table.clone(),
            schema_only: self.schema_only,
            data_only: self.data_only,
            clean: self.clean,
            create: self.create,
            plain: self.plain,
            jobs: self.jobs.map(usize::from),
        }
    }
}

/// `events` options.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// The physical source (its WAL archive's name, `wal-push --name`).
    #[arg(long)]
    pub name: String,
    /// The table (`schema.table`, or a bare name).
    #[arg(long)]
    pub table: String,
    /// The table's database, when several databases have such a table.
    #[arg(long)]
    pub database: Option<String>,
    /// Only changes committed at or after this time (the search starts at the newest base
    /// backup before it: faster).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only changes committed before this time (the search stops there).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Leave out transactions that deleted or updated fewer rows than this (a busy
    /// table's one-row updates); TRUNCATE, rewrites and DROP are always shown.
    #[arg(long, value_name = "N")]
    pub min_rows: Option<u64>,
}

/// `history` options.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The logical source (PostgreSQL or SQLite).
    #[arg(long)]
    pub name: String,
    /// The table (`schema.table`, or a bare name).
    #[arg(long)]
    pub table: String,
}
