//! `dbvault stats`

use anyhow::Result;
use dbvault_core::stats::stats;

use crate::args::Cli;
use crate::{output, repo_access};

pub fn run(cli: &Cli) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let s = stats(&repo)?;
    if cli.json {
        output::json(&serde_json::to_value(&s)?);
    } else {
        println!("snapshots:      {}", s.snapshots);
        println!("blobs:          {}", s.blobs);
        println!("packs:          {}", s.packs);
        println!("index files:    {}", s.index_files);
        println!("stored:         {}", output::bytes(s.stored_bytes));
        println!("snapshot data:  {}", output::bytes(s.snapshot_bytes));
        println!("ratio:          {:.1}x", s.ratio);
    }
    Ok(())
}
