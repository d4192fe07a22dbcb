#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Criterion benchmarks of the engine on seeded, dump-like data: content-defined and
//! row-aligned chunking, keyed hashing, compress+seal and open+decompress+verify on one and
//! two threads (the compute floor of a backup and of a restore), and the whole backup
//! pipeline.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dbvault_benches::bench_repo;
use dbvault_core::backup::{PartInput, SnapshotMeta};
use dbvault_core::chunker::{chunks, ChunkerParams, LineChunks, LineParams};
use dbvault_core::crypto::{open_blob, seal_blob, IdCheck, Keys};
use dbvault_core::SourceInfo;
use dbvault_tests::dump_like;
use rayon::prelude::*;

const SIZE: usize = 32 << 20;

/// 32 MiB of seeded dump-like data, or, with `DBVAULT_BENCH_FILE=PATH`, the first 32 MiB of
/// that file (a real pg_dump, to state the floor for the bytes shopbench backs up).
fn input(seed: u64) -> Vec<u8> {
    match std::env::var_os("DBVAULT_BENCH_FILE") {
        Some(p) => {
            use std::io::Read;
            let mut v = Vec::new();
            std::fs::File::open(&p)
                .and_then(|f| f.take(SIZE as u64).read_to_end(&mut v))
                .expect("DBVAULT_BENCH_FILE");
            v
        }
        None => dump_like(SIZE, seed),
    }
}

fn chunking(c: &mut Criterion) {
    let data = input(1);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_64k_keyed", |b| {
        b.iter(|| {
            chunks(
                &data[..],
                ChunkerParams::default(),
                std::sync::Arc::new(dbvault_core::chunker::Gear::seeded(0x1234_5678)),
            )
            .map(|c| c.map(|c| c.length).unwrap_or(0))
            .sum::<usize>()
        })
    });
    let rows = LineParams {
        min: 8 << 10,
        avg: 32 << 10,
        max: 256 << 10,
    };
    g.bench_function("row_aligned_32k_keyed", |b| {
        b.iter(|| {
            LineChunks::new(
                &data[..],
                rows,
                &dbvault_core::chunker::Gear::seeded(0x1234_5678),
            )
            .map(|c| c.map(|c| c.len()).unwrap_or(0))
            .sum::<usize>()
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = input(2);
    let keys = Keys::from_master(&[5u8; 32]);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("keyed_blake3_32k_blobs", |b| {
        b.iter(|| {
            data.chunks(32 << 10)
                .map(|c| u64::from(keys.blob_id(c).0[0]))
                .sum::<u64>()
        })
    });
    // A part's BLAKE3 as a restore computes it: the part's chunks (about 41 KiB at
    // shopbench's tables, not aligned to BLAKE3's 1 KiB chunks) fed in 4 MiB batches.
    g.bench_function("part_blake3_41k_chunks_one_thread", |b| {
        let pool = pool(1);
        b.iter(|| {
            pool.install(|| {
                let mut h = dbvault_core::hash::TreeHash::default();
                for batch in data.chunks(4 << 20) {
                    h.update_batch(batch.chunks(41_000));
                }
                h.finalize().as_bytes()[0]
            })
        })
    });
    g.finish();
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
}

/// Compress (zstd level 1, the repository default) and seal 32 KiB blobs on one and two
/// threads: the CPU stage that rayon spreads over the cores.
fn sealing(c: &mut Criterion) {
    let data = input(3);
    let keys = Keys::from_master(&[6u8; 32]);
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for threads in [1usize, 2] {
        let pool = pool(threads);
        g.bench_with_input(
            BenchmarkId::new("zstd1_xchacha_32k_blobs", threads),
            &threads,
            |b, _| {
                b.iter(|| {
                    pool.install(|| {
                        data.par_chunks(32 << 10)
                            .map(|c| {
                                seal_blob(&keys, &keys.blob_id(c), c, 1)
                                    .map(|s| s.len())
                                    .unwrap_or(0)
                            })
                            .sum::<usize>()
                    })
                })
            },
        );
    }
    g.finish();
}

/// Open (XChaCha20-Poly1305), decompress and check the keyed id of 64 KiB blobs on one and
/// two threads: what every restored byte costs before it is written (the restore's floor).
fn opening(c: &mut Criterion) {
    let data = input(5);
    let keys = Keys::from_master(&[8u8; 32]);
    let blobs: Vec<_> = data
        .chunks(64 << 10)
        .map(|c| {
            let id = keys.blob_id(c);
            (id, seal_blob(&keys, &id, c, 1).expect("seal"), c.len())
        })
        .collect();
    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for threads in [1usize, 2] {
        let pool = pool(threads);
        g.bench_with_input(
            BenchmarkId::new("xchacha_zstd_verify_64k_blobs", threads),
            &threads,
            |b, _| {
                b.iter(|| {
                    pool.install(|| {
                        blobs
                            .par_iter()
                            .map(|(id, s, n)| {
                                open_blob(&keys, id, s, *n, &|| "bench".into(), IdCheck::Rehash)
                                    .map(|p| p.len())
                                    .unwrap_or(0)
                            })
                            .sum::<usize>()
                    })
                })
            },
        );
    }
    g.finish();
}

/// The whole backup pipeline (read, chunk, hash, dedup, compress, seal, pack, write) into
/// a local repository, on every core.
fn pipeline(c: &mut Criterion) {
    let data = input(4);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("first_backup", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let repo = bench_repo(&dir.path().join("r"));
            let bk = repo.start_backup().expect("start");
            bk.add_part(
                PartInput {
                    name: "p".into(),
                    kind: "raw".into(),
                    ..Default::default()
                },
                &data[..],
            )
            .expect("part");
            bk.finish(SnapshotMeta {
                time: chrono::Local::now().fixed_offset(),
                name: "b".into(),
                tags: vec![],
                source: SourceInfo::default(),
            })
            .expect("finish")
        })
    });
    g.finish();
}

criterion_group!(benches, chunking, hashing, sealing, opening, pipeline);
criterion_main!(benches);
