//! `dbvault snapshots`

use anyhow::Result;

use crate::args::{Cli, SnapshotsArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, a: &SnapshotsArgs) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let (all, damaged) = repo.readable_snapshots()?;
    for e in &damaged {
        eprintln!("dbvault: warning: {e} (listing the others; run `dbvault check`)");
    }
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.name.as_deref().is_none_or(|n| s.name == n))
        .collect();
    if cli.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "time": output::time(&s.time),
                    "name": s.name,
                    "host": s.host,
                    "tags": s.tags,
                    "source": s.source,
                    "bytes_in": s.bytes_in,
                    "bytes_added": s.bytes_added,
                    "parts": s.parts.iter().map(output::part_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&serde_json::Value::Array(v));
        return Ok(());
    }
    if snaps.is_empty() {
        crate::outln!("no snapshots");
        return Ok(());
    }
    crate::outln!(
        "{:<10} {:<25} {:<16} {:>10} {:>6}  tags",
        "id",
        "time",
        "name",
        "size",
        "parts"
    );
    for (id, s) in &snaps {
        crate::outln!(
            "{:<10} {:<25} {:<16} {:>10} {:>6}  {}",
            id.short(),
            output::time(&s.time),
            s.name,
            output::bytes(s.bytes_in),
            s.parts.len(),
            s.tags.join(",")
        );
    }
    crate::outln!("{} snapshot(s)", snaps.len());
    Ok(())
}
