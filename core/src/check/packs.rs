//! `check`, packs: existence, trailers against the index, and (optionally) every blob.

use std::collections::HashMap;

use rayon::prelude::*;

use super::{Bad, CheckReport, Problem, ReadData};
use crate::blobs::{fitting, Blobs};
use crate::crypto::{delta_base, IdCheck};
use crate::index::{read_file, BlobLoc, Index};
use crate::pack::{pack_path, read_trailer};
use crate::{Id, Repository, Result};

/// Plaintext of delta bases `check --read-data` reads at once.
const DELTA_BASES_RAW: u64 = 4 << 20;

/// What one pack's check found.
#[derive(Default)]
struct PackOutcome {
    problems: Vec<Problem>,
    bad: Vec<(Id, String)>,
    blobs_read: u64,
    bytes_read: u64,
    read: bool,
}

fn pack_problem(pack: &Id, detail: impl Into<String>) -> Problem {
    let mut p = Problem::new("pack", detail);
    p.pack = Some(pack.to_hex());
    p
}

/// Checks every pack; returns the blobs found bad.
pub(crate) fn check_packs(
    repo: &Repository,
    index: &Index,
    read: ReadData,
    report: &mut CheckReport,
) -> Result<Bad> {
    let backend = repo.backend().as_ref();
    let mut sizes: HashMap<Id, u64> = HashMap::new();
    for o in backend.list("data/")? {
        match Id::from_hex(o.path.rsplit('/').next().unwrap_or_default()) {
            Ok(id) => {
                sizes.insert(id, o.size);
            }
            Err(_) => report
                .problems
                .push(Problem::new("pack", format!("{}: not a pack name", o.path))),
        }
    }
    // Positions of the index's blobs, by the pack the index places them in.
    let mut by_pack: HashMap<Id, Vec<u32>> = HashMap::new();
    for pos in 0..index.blob_count() {
        by_pack
            .entry(index.entry_at(pos).1.pack)
            .or_default()
            .push(pos as u32);
    }
    for r in 0..index.pack_records() {
        by_pack.entry(index.pack_record(r).0).or_default();
    }
    let salt = {
        let mut b = [0u8; 8];
        crate::crypto::fill_random(&mut b)?;
        u64::from_le_bytes(b)
    };
    let key = |id: &Id| u64::from_le_bytes(id.0[..8].try_into().unwrap_or_default());
    // A percentage reads that share of the packs, rounded up: at least one pack of a
    // small repository (5% of 3 packs is one, not a coin toss that reads none).
    let percent: std::collections::HashSet<Id> = match read {
        ReadData::Percent(p) if p > 0.0 => {
            let n = by_pack.len();
            let k = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1));
            let mut ids: Vec<&Id> = by_pack.keys().collect();
            ids.sort_by_key(|id| key(id) ^ salt);
            ids.into_iter().take(k).copied().collect()
        }
        _ => Default::default(),
    };
    let chosen = |id: &Id| match read {
        ReadData::None => false,
        ReadData::All => true,
        ReadData::Percent(_) => percent.contains(id),
        ReadData::Slice(n, m) => key(id) % u64::from(m) == u64::from(n - 1),
    };
    let packs: Vec<(&Id, &Vec<u32>)> = by_pack.iter().collect();
    let to_read: u64 = packs
        .iter()
        .filter(|(id, _)| chosen(id))
        .map(|(id, _)| sizes.get(*id).copied().unwrap_or(0))
        .sum();
    let task = repo.task(
        if to_read > 0 {
            "reading packs"
        } else {
            "checking packs"
        },
        Some(if to_read > 0 {
            to_read
        } else {
            packs.len() as u64
        }),
        if to_read > 0 {
            crate::progress::Unit::Bytes
        } else {
            crate::progress::Unit::Items
        },
    );
    let outcomes: Vec<PackOutcome> = packs
        .par_iter()
        .map(|(id, positions)| {
            let read = chosen(id);
            let o = check_one(repo, index, id, positions, sizes.get(*id).copied(), read);
            task.inc(if to_read > 0 {
                if read {
                    sizes.get(*id).copied().unwrap_or(0)
                } else {
                    0
                }
            } else {
                1
            });
            o
        })
        .collect();
    drop(task);
    let mut bad = Bad::default();
    for ((id, _), o) in packs.iter().zip(outcomes) {
        report.packs += 1;
        report.packs_read += usize::from(o.read);
        report.blobs_read += o.blobs_read;
        report.bytes_read += o.bytes_read;
        report.problems.extend(o.problems);
        if sizes.get(*id).is_none() {
            bad.packs.insert(**id);
        }
        for (blob, why) in o.bad {
            bad.blobs.insert(blob, (**id, why));
        }
    }
    // Packs on storage that no index names.
    let unindexed: Vec<(&Id, &u64)> = sizes
        .iter()
        .filter(|(id, _)| !by_pack.contains_key(*id))
        .collect();
    let verdicts: Vec<Result<()>> = unindexed
        .par_iter()
        .map(|(id, size)| read_trailer(backend, repo.keys(), id, **size).map(|_| ()))
        .collect();
    for ((id, _), v) in unindexed.iter().zip(verdicts) {
        match v {
            Ok(()) => report.warnings.push(pack_problem(
                id,
                "no index names this pack (left by an interrupted backup or prune, and prune removes it; or named by a damaged index file, and `dbvault repair index` indexes it again)",
            )),
            Err(e) => report
                .problems
                .push(pack_problem(id, format!("no index names it and it is not a readable pack: {e}"))),
        }
    }
    mark_bad_deltas(repo, index, &mut bad)?;
    Ok(bad)
}

fn check_one(
    repo: &Repository,
    index: &Index,
    id: &Id,
    positions: &[u32],
    size: Option<u64>,
    read_all: bool,
) -> PackOutcome {
    let mut o = PackOutcome::default();
    let path = pack_path(id);
    let Some(size) = size else {
        o.problems.push(pack_problem(
            id,
            format!("is missing, {} indexed blobs with it", positions.len()),
        ));
        o.bad = positions
            .iter()
            .map(|&p| {
                (
                    index.entry_at(p as usize).0,
                    "its pack is missing".to_string(),
                )
            })
            .collect();
        return o;
    };
    for &p in positions {
        let (blob, loc, _) = index.entry_at(p as usize);
        if u64::from(loc.offset) + u64::from(loc.len) > size {
            o.bad.push((
                blob,
                format!("lies past the end of the pack ({size} bytes)"),
            ));
        }
    }
    if !o.bad.is_empty() {
        o.problems.push(pack_problem(
            id,
            format!(
                "is truncated: {} indexed blobs lie past its end ({size} bytes)",
                o.bad.len()
            ),
        ));
    }
    match read_trailer(repo.backend().as_ref(), repo.keys(), id, size) {
        Err(e) => o.problems.push(pack_problem(id, format!("trailer: {e}"))),
        Ok(entries) => {
            let mut agree = 0usize;
            for e in &entries {
                if let Some(loc) = index.get(&e.id).filter(|l| l.pack == *id) {
                    if loc.offset == e.offset && loc.len == e.len && loc.raw_len == e.raw_len {
                        agree += 1;
                    }
                }
            }
            if agree != positions.len() {
                o.problems.push(pack_problem(
                    id,
                    format!(
                        "trailer and index disagree: {agree} of the {} blobs the index places here match",
                        positions.len()
                    ),
                ));
            }
        }
    }
    if read_all {
        read_data(repo, index, id, &path, positions, &mut o);
    }
    o
}

/// Reads a pack whole and opens every indexed blob in it.
fn read_data(
    repo: &Repository,
    index: &Index,
    id: &Id,
    path: &str,
    positions: &[u32],
    o: &mut PackOutcome,
) {
    let bytes = match repo.backend().read(path) {
        Ok(b) => b,
        Err(e) => {
            o.problems
                .push(pack_problem(id, format!("cannot be read: {e}")));
            return;
        }
    };
    o.read = true;
    o.bytes_read = bytes.len() as u64;
    let blobs = Blobs {
        backend: repo.backend().as_ref(),
        keys: repo.keys(),
        index,
    };
    let mut damaged = 0;
    let mut first = String::new();
    let mut failed = |blob: Id, err: crate::Error| {
        damaged += 1;
        if first.is_empty() {
            first = err.to_string();
        }
        o.bad.push((blob, err.to_string()));
    };
    // Deltas wait, with their bases, so that the bases are read together below.
    let mut deltas: Vec<(Id, BlobLoc, &[u8], Id, u64)> = Vec::new();
    for &p in positions {
        let (blob, loc, _) = index.entry_at(p as usize);
        let (s, e) = (loc.offset as usize, loc.offset as usize + loc.len as usize);
        let Some(sealed) = bytes.get(s..e) else {
            continue; // reported as truncated
        };
        o.blobs_read += 1;
        if loc.delta {
            match delta_base(repo.keys(), &blob, sealed, &|| format!("pack {path}")) {
                Ok((base, _)) => {
                    let raw = index.get(&base).map_or(0, |l| u64::from(l.raw_len));
                    deltas.push((blob, loc, sealed, base, raw));
                }
                Err(err) => failed(blob, err.in_pack(*id)),
            }
        } else if let Err(err) = blobs.open_at(&blob, &loc, sealed, path) {
            failed(blob, err);
        }
    }
    // A delta's base read one request at a time made `check --read-data` of an S3
    // repository a request per delta (1,138 for 12 packs). Now the bases of a few MiB of
    // deltas at a time are read together (80 requests); when that read fails (a damaged or missing
    // base), each delta of the slice is opened alone, so the damage is pinned on the right
    // blobs.
    // In the order of their bases in storage: a slice's bases are then neighbours, read
    // with a request or two.
    deltas.sort_by_key(|d| index.get(&d.3).map(|l| (l.pack, l.offset)));
    let mut rest = &deltas[..];
    while !rest.is_empty() {
        let n = fitting(rest, DELTA_BASES_RAW, |d| d.4);
        let (slice, tail) = rest.split_at(n);
        rest = tail;
        let wanted: Vec<Id> = slice.iter().map(|d| d.3).collect();
        let bases = blobs.read_many(&wanted).unwrap_or_default();
        let opened: Vec<(Id, crate::Result<Vec<u8>>)> = slice
            .par_iter()
            .map(|(blob, loc, sealed, _, _)| {
                (
                    *blob,
                    blobs.open_with(blob, loc, sealed, path, &bases, IdCheck::Rehash),
                )
            })
            .collect();
        for (blob, r) in opened {
            if let Err(err) = r {
                failed(blob, err);
            }
        }
    }
    if damaged > 0 {
        let mut p = Problem::new("data", format!("{damaged} blobs do not read back: {first}"));
        p.pack = Some(id.to_hex());
        o.problems.push(p);
    }
}

/// Deltas whose base is missing or bad are bad too (read from the index files, which name
/// every delta's base).
pub(crate) fn mark_bad_deltas(repo: &Repository, index: &Index, bad: &mut Bad) -> Result<()> {
    for f in repo.backend().list("index/")? {
        let Ok(content) = read_file(repo.backend().as_ref(), repo.keys(), &f.path) else {
            continue; // reported already
        };
        for (pack, entries) in content {
            for e in entries {
                let Some(base) = e.base else { continue };
                let this_copy = index
                    .get(&e.id)
                    .is_some_and(|l| l.pack == pack && l.offset == e.offset);
                if !this_copy || bad.blobs.contains_key(&e.id) {
                    continue;
                }
                let why = match (index.get(&base), bad.blobs.get(&base)) {
                    (None, _) => Some((
                        pack,
                        format!("its delta base {} is not indexed", base.short()),
                    )),
                    (Some(_), Some((bp, w))) => {
                        Some((*bp, format!("its delta base {}: {w}", base.short())))
                    }
                    _ => None,
                };
                if let Some(w) = why {
                    bad.blobs.insert(e.id, w);
                }
            }
        }
    }
    Ok(())
}
