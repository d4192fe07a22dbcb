//! `dbvault restore`

use std::io::BufWriter;

use anyhow::{bail, Result};
use dbvault_core::restore::restore_part;

use crate::args::{Cli, RestoreArgs};
use crate::repo_access;

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<()> {
    if a.to != "-" {
        bail!("restore target {:?} is not supported by this build yet: use --to - (stdout)", a.to);
    }
    let repo = repo_access::open(cli)?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    if let Some(t) = a.tables.first() {
        bail!(
            "snapshot {} has no table {t:?}: it is a {} stream of {}, with no tables",
            id.short(),
            snap.source.format,
            snap.source.kind
        );
    }
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout());
    for part in &snap.parts {
        let report = restore_part(&repo, part, &mut out)?;
        for w in report.warnings {
            eprintln!("dbvault: warning: {w}");
        }
    }
    Ok(())
}
