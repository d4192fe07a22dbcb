//! `dbvault stats`

use anyhow::Result;
use dbvault_core::stats::stats;

use crate::args::Cli;
use crate::{output, repo_access};

pub fn run(cli: &Cli) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let s = stats(&repo)?;
    let requests = repo.backend().requests();
    if cli.json {
        let mut v = serde_json::to_value(&s)?;
        v["requests"] = serde_json::json!(requests);
        output::json(&v);
    } else {
        crate::outln!("snapshots:      {}", s.snapshots);
        crate::outln!("blobs:          {}", s.blobs);
        crate::outln!("packs:          {}", s.packs);
        crate::outln!("index files:    {}", s.index_files);
        crate::outln!("stored:         {}", output::bytes(s.stored_bytes));
        crate::outln!("snapshot data:  {}", output::bytes(s.snapshot_bytes));
        crate::outln!("ratio:          {:.1}x", s.ratio);
        if let Some(n) = requests {
            crate::outln!("requests:       {n}");
        }
    }
    Ok(())
}
