//! The engine as a library, no binary: backup, restore, forget, prune and check through
//! `dbvault_core`'s API on a temporary local repository.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use dbvault_core::backend::local::LocalBackend;
use dbvault_core::backup::{Chunking, PartInput, SnapshotMeta};
use dbvault_core::blobs::part_chunk_ids;
use dbvault_core::check::{check, ReadData};
use dbvault_core::crypto::seal_blob;
use dbvault_core::keyfile::KdfParams;
use dbvault_core::lock::{LockKind, LockOptions};
use dbvault_core::pack::pack_path;
use dbvault_core::prune::{prune, PruneOptions};
use dbvault_core::restore::restore_part;
use dbvault_core::retention::{apply, Policy};
use dbvault_core::{Id, RepoConfig, Repository, SourceInfo};

fn data(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible, reproducible.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn open(dir: &std::path::Path, kind: LockKind) -> Repository {
    let repo = Repository::open(Arc::new(LocalBackend::new(dir)), b"pw").expect("open");
    repo.lock(kind, &LockOptions::new("library test", Duration::ZERO))
        .expect("lock");
    repo
}

fn at(day: u32) -> DateTime<FixedOffset> {
    Utc.with_ymd_and_hms(2026, 11, day, 2, 0, 0)
        .single()
        .expect("time")
        .fixed_offset()
}

fn backup(repo: &Repository, bytes: &[u8], day: u32) -> Id {
    let parent = repo
        .find_snapshot("latest", Some("lib"))
        .ok()
        .map(|(_, s)| s);
    let b = repo.start_backup_after(parent.as_ref()).expect("start");
    b.add_part(
        PartInput {
            name: "stream".into(),
            kind: "raw".into(),
            chunking: Chunking::ContentDefined,
            ..Default::default()
        },
        bytes,
    )
    .expect("part");
    b.finish(SnapshotMeta {
        time: at(day),
        name: "lib".into(),
        tags: Vec::new(),
        source: SourceInfo {
            kind: "test".into(),
            identity: "library".into(),
            format: "raw".into(),
            ..Default::default()
        },
    })
    .expect("finish")
    .id
}

fn restored(repo: &Repository, id: &Id) -> Vec<u8> {
    let snap = repo.load_snapshot(id).expect("snapshot");
    let mut out = Vec::new();
    for p in &snap.parts {
        restore_part(repo, p, &mut out).expect("restore");
    }
    out
}

/// A new repository in a temporary directory (a cheap KDF: tests open it often).
fn new_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let kdf = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    Repository::init(
        Arc::new(LocalBackend::new(dir.path())),
        b"pw",
        kdf,
        RepoConfig::default(),
    )
    .expect("init");
    dir
}

#[test]
fn backup_restore_forget_prune_and_check_through_the_api() {
    let dir = new_repository();

    // Five nights: a part that stays, and a night's own data.
    let repo = open(dir.path(), LockKind::Shared);
    let mut nights = Vec::new();
    let common = data(2 << 20, 1);
    for day in 1..=5u32 {
        let mut stream = common.clone();
        stream.extend(data(1 << 20, u64::from(day) + 100));
        let id = backup(&repo, &stream, day);
        nights.push((id, stream));
    }
    for (id, want) in &nights {
        assert!(restored(&repo, id) == *want, "a night does not restore");
    }
    let report = check(&repo, ReadData::All, &|_| {}).expect("check");
    assert!(report.ok, "{:?}", report.problems);

    // Keep the last two; forget the rest.
    let snaps: Vec<(Id, DateTime<FixedOffset>)> = nights
        .iter()
        .zip(1u32..)
        .map(|((id, _), d)| (*id, at(d)))
        .collect();
    let policy = Policy {
        last: 2,
        ..Policy::default()
    };
    let verdicts = apply(&snaps, &policy, &Utc);
    let forget: Vec<Id> = verdicts
        .iter()
        .filter(|v| v.reasons.is_empty())
        .map(|v| v.id)
        .collect();
    assert_eq!(forget.len(), 3);
    repo.forget_snapshots(&forget).expect("forget");
    repo.unlock();
    drop(repo);

    // Prune under an exclusive lock: space is freed, the kept nights restore.
    let repo = open(dir.path(), LockKind::Exclusive);
    let opts = PruneOptions {
        repack_unused_percent: 0,
        ..PruneOptions::default()
    };
    let pruned = prune(&repo, opts, &|_| {}).expect("prune");
    assert!(pruned.bytes_freed > 0, "nothing freed");
    for (id, want) in &nights[3..] {
        assert!(
            restored(&repo, id) == *want,
            "a kept night does not restore"
        );
    }
    assert_eq!(repo.snapshot_ids().expect("ids").len(), 2);
    let report = check(&repo, ReadData::All, &|_| {}).expect("check");
    assert!(report.ok, "{:?}", report.problems);

    // A flipped byte in a pack is damage, named by pack.
    let pack = std::fs::read_dir(dir.path().join("data"))
        .expect("data")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).expect("dir").flatten())
        .map(|e| e.path())
        .find(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .expect("a pack");
    let mut bytes = std::fs::read(&pack).expect("pack");
    bytes[100] ^= 1;
    let _ = std::fs::remove_file(&pack);
    std::fs::write(&pack, &bytes).expect("write");
    let report = check(&repo, ReadData::All, &|_| {}).expect("check");
    assert!(!report.ok);
    let name = pack
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.pack.as_deref() == Some(name.as_str())),
        "{:?}",
        report.problems
    );
}

/// Restoring `part` fails as damage, on the part's recorded hash.
fn refused_by_part_hash(repo: &Repository, part: &dbvault_core::Part) {
    let err = restore_part(repo, part, &mut Vec::new()).expect_err("must refuse");
    assert!(
        err.to_string()
            .contains("restored bytes do not match the hash recorded at backup"),
        "{err}"
    );
    assert!(err.is_damage(), "{err:?}");
}

#[test]
fn a_restore_checks_the_whole_part_against_the_hash_recorded_at_backup() {
    let dir = new_repository();
    let repo = open(dir.path(), LockKind::Shared);
    // Several batches and a megabyte piece split across them, and a short tail.
    let stream = data((9 << 20) + 12_345, 7);
    let id = backup(&repo, &stream, 1);
    assert_eq!(restored(&repo, &id), stream);

    let mut part = repo.load_snapshot(&id).expect("snapshot").parts[0].clone();
    assert_eq!(part.blake3, blake3::hash(&stream).to_hex().as_str());
    // A record that names other bytes (every chunk itself verifies): refused, nothing
    // claimed to be intact.
    part.blake3 = blake3::hash(b"other bytes").to_hex().to_string();
    refused_by_part_hash(&repo, &part);
}

#[test]
fn a_blob_that_authenticates_but_holds_other_bytes_fails_the_restore_and_check_names_it() {
    // What a writer's bug would leave: a blob sealed with the key under its id, holding
    // other bytes. A restore trusts each chunk's tag (it binds the id) and catches this
    // with the part's hash; `check --read-data` re-hashes every blob and names it.
    let dir = new_repository();
    let repo = open(dir.path(), LockKind::Shared);
    let stream = data(3 << 20, 11);
    let id = backup(&repo, &stream, 1);
    let part = repo.load_snapshot(&id).expect("snapshot").parts[0].clone();
    let index = repo.index().expect("index");
    let chunk = part_chunk_ids(&repo, &index, &part).expect("ids")[1];
    let loc = index.get(&chunk).expect("indexed");
    let other = data(loc.raw_len as usize, 12);
    let forged = seal_blob(repo.keys(), &chunk, &other, 3).expect("seal");
    assert_eq!(forged.len(), loc.len as usize, "incompressible either way");
    let pack = dir.path().join(pack_path(&loc.pack));
    let mut bytes = std::fs::read(&pack).expect("pack");
    let at = loc.offset as usize;
    bytes[at..at + forged.len()].copy_from_slice(&forged);
    let _ = std::fs::remove_file(&pack);
    std::fs::write(&pack, &bytes).expect("write");

    refused_by_part_hash(&repo, &part);
    let report = check(&repo, ReadData::All, &|_| {}).expect("check");
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.detail.contains("does not match its id")),
        "{:?}",
        report.problems
    );
}
