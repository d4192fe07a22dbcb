//! Prune's repack phase: copy the needed blobs of mostly-unused packs into new packs.

use std::collections::HashMap;

use super::mark::Bits;
use super::{refuse, Fate};
use crate::index::Index;
use crate::pack::{pack_path, parse_trailer, PackBuilder, PackEntry};
use crate::{Id, Repository, Result};

/// Copies the needed blobs of the packs to repack into new packs, sealed bytes as they
/// are (authenticated first), entries (with delta bases) from each pack's own trailer.
/// Returns the new packs: id, entries, size.
///
/// # Errors
/// A pack whose trailer or blobs are damaged, or that lacks a blob the index places in
/// it (nothing has been deleted yet); backend errors.
pub(crate) fn repack(
    repo: &Repository,
    index: &Index,
    used: &Bits,
    fate: &HashMap<Id, Fate>,
    progress: &dyn Fn(&str),
) -> Result<Vec<(Id, Vec<PackEntry>, u64)>> {
    // Needed blobs whose copy the index points at lives in a pack to repack.
    let mut wanted: HashMap<Id, usize> = HashMap::new();
    for pos in 0..index.blob_count() {
        let (_, loc, _) = index.entry_at(pos);
        if used.get(pos) && fate.get(&loc.pack) == Some(&Fate::Repack) {
            *wanted.entry(loc.pack).or_default() += 1;
        }
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    progress(&format!("repacking {} packs", wanted.len()));
    let target = repo.config().pack_target as usize;
    let mut out = Vec::new();
    let new = || PackBuilder::new_for(repo.backend().as_ref(), Vec::new(), target);
    let mut builder = new()?;
    let mut order: Vec<(Id, usize)> = wanted.into_iter().collect();
    order.sort_unstable();
    let task = repo.task(
        "repacking",
        Some(order.len() as u64),
        crate::progress::Unit::Items,
    );
    for (pack, count) in order {
        task.inc(1);
        let path = pack_path(&pack);
        let what = format!("pack {path}");
        let bytes = repo.backend().read(&path)?;
        let entries = parse_trailer(repo.keys(), &bytes, bytes.len() as u64, &what)
            .map_err(|e| refuse(e.to_string()))?;
        let mut copied = 0;
        for e in entries {
            let here = index
                .position(&e.id)
                .filter(|&p| used.get(p))
                .map(|p| index.entry_at(p).1)
                .is_some_and(|loc| loc.pack == pack && loc.offset == e.offset);
            if !here {
                continue;
            }
            let sealed = &bytes[e.offset as usize..(e.offset + e.len) as usize];
            // Damage must not be laundered into a new pack.
            repo.keys()
                .open(sealed, &e.id.0, &|| what.clone())
                .map_err(|err| refuse(err.to_string()))?;
            builder.add(e.kind, e.id, sealed, e.raw_len, e.base)?;
            copied += 1;
            if builder.len() >= target {
                out.push(store(repo, std::mem::replace(&mut builder, new()?))?);
            }
        }
        if copied != count {
            return Err(refuse(format!(
                "{what} lists {copied} of the {count} needed blobs the index places in it (run `dbvault check`)"
            )));
        }
    }
    if !builder.is_empty() {
        out.push(store(repo, builder)?);
    }
    Ok(out)
}

fn store(repo: &Repository, builder: PackBuilder) -> Result<(Id, Vec<PackEntry>, u64)> {
    let p = builder.finish(repo.keys())?;
    p.bytes
        .store(repo.backend().as_ref(), &pack_path(&p.id))
        .0?;
    Ok((p.id, p.entries, p.len))
}
