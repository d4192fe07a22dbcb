//! PostgreSQL: backups (a piped pg_dump, or direct from a server: one database or a whole
//! server), restores (a script, a whole database scheduled like `pg_restore -j`, or tables
//! beside the live ones), and restore-tests, as library functions over a
//! [`dbvault_core::Repository`].
//!
//! - `conn`, `url`, `psql`, `tools`: the one connection type, [`PgSource`], and the libpq
//!   programs;
//! - `dump`, `script`: pg_dump's plain format (split into parts; entries of a script);
//! - `meta`: the part kinds and what a table's part records;
//! - `backup`, `data`, `lobs`, `server`: direct backups;
//! - `load`, `restore`, `restore_db`, `restore_jobs`, `restore_server`: restores;
//! - `verify`: restore-test;
//! - `to_sqlite`: tables loaded into SQLite for `dbvault sql`;
//! - `wal`: WAL archiving (`wal-push`, `wal-fetch`);
//! - `physical`: base backups and point-in-time recovery into a data directory.

pub mod archive;
pub mod backup;
pub mod clean;
pub mod conn;
pub mod data;
pub mod dump;
pub mod entries;
pub mod ident;
pub mod load;
pub mod lobs;
pub mod meta;
pub mod options;
mod pgpass;
pub mod physical;
mod post_plan;
pub mod psql;
pub mod restore;
pub mod restore_db;
mod restore_jobs;
pub mod restore_server;
pub mod script;
pub mod select;
pub mod server;
pub mod session;
mod setvals;
pub mod tls;
pub mod to_sqlite;
pub mod toc;
pub mod tools;
pub mod url;
pub mod verify;
pub mod wal;

pub use backup::{backup, DirectOptions};
pub use conn::PgSource;
pub use restore::{restore, Notice, Notify, RestoreOptions, Target};
pub use select::Selection;
