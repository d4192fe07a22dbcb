//! The command line (clap derive). Global options are accepted before or after the
//! subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// dbvault: deduplicated, compressed, encrypted backups of PostgreSQL and SQLite databases.
#[derive(Parser, Debug)]
#[command(name = "dbvault", version, about, propagate_version = true)]
// The options every command takes come after a command's own, under their own heading.
#[command(next_help_heading = "Global options")]
pub struct Cli {
    /// Repository: a local path, file:///path, or s3://bucket/prefix.
    #[arg(long, global = true, env = "DBVAULT_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// Print one JSON document on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Progress of long commands on stderr: `auto` (bars when stderr is a terminal),
    /// `bars`, `json` (a JSON line per task each second, for wrappers), `none`.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "MODE"
    )]
    pub progress: crate::progress::Mode,
    /// No progress display.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Read the passphrase from this file (first line). Also DBVAULT_PASSWORD_FILE.
    #[arg(
        long,
        global = true,
        env = "DBVAULT_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// S3 endpoint URL (else AWS_ENDPOINT_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION).
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Use path-style S3 addressing (most S3-compatible stores need it). Also
    /// DBVAULT_S3_PATH_STYLE=1.
    #[arg(long, global = true, env = "DBVAULT_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_path_style: bool,
    /// Seconds one S3 request may take before it is retried (default 120).
    #[arg(
        long,
        global = true,
        env = "DBVAULT_S3_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub s3_timeout: Option<u64>,
    /// Never delete anything but this client's own locks: for a database host whose store
    /// credentials cannot delete (see docs/security.md, Append-only hosts). `forget` and `prune`
    /// refuse; `run` leaves retention to the admin host.
    #[arg(long, global = true, env = "DBVAULT_APPEND_ONLY", value_parser = clap::builder::BoolishValueParser::new())]
    pub append_only: bool,
    /// Do not use the local cache of keys, index and snapshots of S3 repositories (kept in
    /// $DBVAULT_CACHE_DIR, else $XDG_CACHE_HOME/dbvault, else ~/.cache/dbvault).
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// How long to wait for another process's conflicting repository lock (e.g. a prune)
    /// before giving up; units y, mo, w, d, h, min, s. Default 30min.
    #[arg(long, global = true, value_name = "DURATION")]
    pub lock_wait: Option<String>,
    /// Configuration file for `run` and `status` (default /etc/dbvault/dbvault.toml, then
    /// $XDG_CONFIG_HOME/dbvault/dbvault.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up a database or a stream.
    Backup(BackupArgs),
    /// Back up a folder of old dumps (`backup_20250115_143022.sql.gz`, `*.dump`, gzip or
    /// zstd compressed or not) in date order, each snapshot with its own date: from the
    /// archive's header, else the file name, else its modification time.
    Import(ImportArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot (or some of its tables).
    Restore(RestoreArgs),
    /// Remove snapshots by retention rules (default: the policy stored with `policy`).
    Forget(ForgetArgs),
    /// Delete data no snapshot needs (exclusive: backups wait for it).
    Prune(PruneArgs),
    /// Show or set the retention policy stored in the repository.
    Policy(PolicyArgs),
    /// Verify the repository: structure, and with --read-data the data itself (exit 3 on damage).
    Check(CheckArgs),
    /// Restore a snapshot into a scratch database, check it, drop it, store a report (exit 3 on failure).
    RestoreTest(RestoreTestArgs),
    /// Back up every source of the configuration file, then apply retention, prune and
    /// check on the schedules it gives; one summary; exit 1 if anything failed.
    Run(RunArgs),
    /// Follow the configuration file's continuous sources (`follow = "10s"`): a snapshot of
    /// each whenever it changed, compacted by its retention; runs until stopped.
    Follow(RunArgs),
    /// Which configured sources missed their backup, and when each last passed a restore-test.
    Status,
    /// Show repository statistics.
    Stats,
    /// List a snapshot's tables and parts (rows, bytes), like `pg_restore --list`.
    Ls(LsArgs),
    /// What changed between two snapshots, table by table (rows before and after).
    Diff(DiffArgs),
    /// When was the DROP? The transactions that deleted or updated rows of a table,
    /// truncated, rewrote or dropped it, from a physical source's WAL archive, newest
    /// first, each with the command that restores the table as it was just before.
    Events(EventsArgs),
    /// A table's rows and size in each snapshot of a logical source, and between which
    /// two snapshots its rows fell (reads no data).
    History(HistoryArgs),
    /// Run SQL on a snapshot without restoring it: an SQLite snapshot in place (pages are
    /// read as needed), a PostgreSQL snapshot's tables (`--table`) loaded into a scratch
    /// SQLite database.
    Sql(SqlArgs),
    /// Copy snapshots into a second repository (offsite), re-encrypted under its keys,
    /// storing only what it lacks; a snapshot it already holds is never copied again.
    Copy(CopyArgs),
    /// Store a PostgreSQL WAL file: `archive_command = 'dbvault wal-push %p'`. Exits 0 only
    /// once it is durably stored.
    WalPush(WalPushArgs),
    /// Fetch a PostgreSQL WAL file: `restore_command = 'dbvault wal-fetch %f %p'`. Exits 1
    /// only when the archive does not have it; 255 for any other failure (PostgreSQL then
    /// stops recovery instead of ending it early).
    WalFetch(WalFetchArgs),
    /// Remove a timeline a second server archived into a physical source (a restored copy
    /// started with archiving on, a split brain): its history file and segments, and those
    /// of the timelines after it. `check` names such branches.
    WalRemoveTimeline(WalRemoveTimelineArgs),
    /// Give a damaged repository back, as `check` says: `repair index` rebuilds damaged or
    /// missing index files from the packs' trailers; `repair snapshots` removes or rewrites
    /// snapshots that lost data and salvages damaged packs, naming all that is lost.
    Repair {
        /// What to repair.
        #[command(subcommand)]
        command: RepairCommand,
    },
    /// Manage passphrases: list, add, remove, change.
    Key {
        /// What to do.
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// `import` options.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Files, and folders whose files are imported (not sub-folders, not hidden files).
    #[arg(value_name = "DIR|FILE", required = true)]
    pub paths: Vec<PathBuf>,
    /// One source name for every file (default: each file's name without its date and
    /// extensions, e.g. `backup` for `backup_20250115_143022.sql.gz`).
    #[arg(long)]
    pub name: Option<String>,
    /// Tag every snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// List each file with the date and name it would get; store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wal-push` options.
#[derive(Args, Debug)]
pub struct WalPushArgs {
    /// The WAL file (`%p`).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The source: the same name as the base backups' (`backup --physical --name`).
    #[arg(long, default_value = "postgres")]
    pub name: String,
    /// Also store up to N of the files PostgreSQL marked ready after PATH (a backlog), in
    /// this process; its calls for them then answer without opening the repository (0:
    /// PATH alone).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub ahead: usize,
}

/// `wal-remove-timeline` options.
#[derive(Args, Debug)]
pub struct WalRemoveTimelineArgs {
    /// The timeline (as `check` names it).
    #[arg(value_name = "TIMELINE")]
    pub timeline: u32,
    /// The source, as for `wal-push`.
    #[arg(long, default_value = "postgres")]
    pub name: String,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wal-fetch` options.
#[derive(Args, Debug)]
pub struct WalFetchArgs {
    /// The WAL file's name (`%f`).
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Where to write it (`%p`).
    #[arg(value_name = "PATH")]
    pub dest: PathBuf,
    /// The source, as for `wal-push`.
    #[arg(long, default_value = "postgres")]
    pub name: String,
    /// Segments to fetch ahead, in a background process, into the cache directory's
    /// `wal-prefetch/` (0: none). Recovery then finds each next segment there.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub prefetch: u64,
    /// Internal: be the background process that fetches ahead (FILE is the first).
    #[arg(long, hide = true)]
    pub prefetch_only: bool,
    /// Internal: ask the dbvault that runs a throwaway recovery, listening on this socket
    /// (it has the repository open; the server's user may not be able to read it).
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub relay: Option<PathBuf>,
}

/// `run` options.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Only this source (by name).
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
    /// `run`: say what tonight's run would do (back up, forget, copy, prune, check) and
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Retention rules (`--keep-…`): the library's type, which the configuration file's
/// `[retention]` table deserialises too.
pub use dbvault_core::retention::KeepOptions as KeepArgs;

/// `forget` options.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Forget these snapshots (full ids or unique prefixes) instead of applying rules: a
    /// snapshot whose manifest is damaged too (`check` names it).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Rules (override the stored policy).
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only this source name's snapshots.
    #[arg(long)]
    pub name: Option<String>,
    /// Only snapshots with this tag (repeatable: all of them): the rules apply among them
    /// alone; the others are neither kept nor forgotten.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots taken on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// List what would be kept and forgotten; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Then prune (reclaim the space).
    #[arg(long)]
    pub prune: bool,
    /// Physical sources: also keep WAL archived within this span (e.g. `14d`), beyond what
    /// the kept base backups need.
    #[arg(long, value_name = "DURATION")]
    pub keep_wal_within: Option<String>,
}

/// `prune` options.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Show what would be freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of it is unused.
    #[arg(long, value_name = "PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub repack_unused: u8,
}

/// `policy` options.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// New rules; without any, the stored policy is shown.
    #[command(flatten)]
    pub keep: KeepArgs,
}

/// `init` options.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Pack size target, e.g. 16MiB (the default), 64MiB for very large repositories on
    /// object stores; between 64KiB and 512MiB.
    #[arg(long, value_name = "SIZE")]
    pub pack_size: Option<String>,
    /// The new key's cost.
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// A retention policy to store (used by `forget` without rules).
    #[command(flatten)]
    pub keep: KeepArgs,
}

/// The Argon2id cost of a new key file.
#[derive(Args, Debug)]
pub struct KdfArgs {
    /// Argon2id memory for the new key, in MiB (default 48; at most 1024). Every command
    /// pays it once when it opens the repository.
    #[arg(long, value_name = "MIB")]
    pub kdf_memory: Option<u32>,
    /// Argon2id passes for the new key (default 3; at most 64).
    #[arg(long, value_name = "N")]
    pub kdf_passes: Option<u32>,
    /// Argon2id lanes for the new key (default 1; at most 16).
    #[arg(long, value_name = "N")]
    pub kdf_lanes: Option<u32>,
}

/// `repair` subcommands.
#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Re-index the packs no readable index file names, from their trailers; then remove
    /// the damaged index files.
    Index {
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove snapshots whose manifest is damaged; rewrite those that lost a table's data
    /// without it (others are removed); salvage damaged packs into new ones. Names all
    /// that is lost.
    Snapshots {
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Read every blob (as `check --read-data`) to find damage inside packs.
        #[arg(long)]
        read_data: bool,
    },
}

/// `key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List the key files: id, host, user, creation time; the one in use is marked.
    List,
    /// Add a passphrase (a new key file for the same master secret).
    Add(KeyNewArgs),
    /// Remove a key file (never the last; the one in use only with --force).
    Remove {
        /// Key id or unique prefix (see `key list`).
        id: String,
        /// Remove the key this command opened the repository with.
        #[arg(long)]
        force: bool,
    },
    /// Change the passphrase in use: add a key with the new one, remove the old key.
    Passwd(KeyNewArgs),
}

/// Where a new passphrase comes from, and its key's cost.
#[derive(Args, Debug)]
pub struct KeyNewArgs {
    /// The new passphrase from the first line of FILE (else a prompt on the terminal).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// The new key's cost.
    #[command(flatten)]
    pub kdf: KdfArgs,
}

mod data;
pub use data::*;
