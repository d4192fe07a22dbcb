//! The backend contract as executable checks, run against every backend (local in unit
//! tests, S3 in the end-to-end tests).

use super::{Backend, ObjectInfo};
use crate::{Error, Result};

fn fail(msg: String) -> Error {
    Error::Invalid(format!("backend conformance: {msg}"))
}

/// Runs every contract check against an empty backend.
///
/// # Errors
/// [`Error::Invalid`] describing the first broken rule, or the backend's own error.
pub fn run(b: &dyn Backend) -> Result<()> {
    if !b.list("")?.is_empty() {
        return Err(fail("backend under test must start empty".into()));
    }
    // create + read
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.create("data/ab/obj1", &data)?;
    if b.read("data/ab/obj1")? != data {
        return Err(fail("read returned other bytes".into()));
    }
    // create-only
    match b.create("data/ab/obj1", b"other") {
        Err(Error::AlreadyExists { .. }) => {}
        other => return Err(fail(format!("second create of a path gave {other:?}"))),
    }
    if b.read("data/ab/obj1")? != data {
        return Err(fail("failed create changed the existing object".into()));
    }
    // create_unique: a second store of the same bytes is success
    let unique = b"named by its bytes".to_vec();
    b.create_unique("index/uniq", &unique)?;
    b.create_unique("index/uniq", &unique)?;
    if b.read("index/uniq")? != unique {
        return Err(fail("create_unique stored other bytes".into()));
    }
    b.remove("index/uniq")?;
    // create_unique_owned: stores the bytes and gives the same buffer's bytes back
    let (r, back) = b.create_unique_owned("index/owned", unique.clone());
    r?;
    if back != unique || b.read("index/owned")? != unique {
        return Err(fail(
            "create_unique_owned stored or gave back other bytes".into(),
        ));
    }
    b.remove("index/owned")?;
    // spool (optional): pieces become one object only when finished; a second spool of
    // the same bytes to the same name is success; a dropped one leaves nothing listed.
    if b.spool()?.is_some() {
        let before = b.list("data/")?.len();
        for _ in 0..2 {
            let mut sp = b.spool()?.ok_or_else(|| fail("spool vanished".into()))?;
            sp.write(&data[..1000])?;
            sp.write(&data[1000..])?;
            sp.finish_unique("data/cd/spooled")?;
        }
        if b.read("data/cd/spooled")? != data {
            return Err(fail("a spooled object holds other bytes".into()));
        }
        let mut dropped = b.spool()?.ok_or_else(|| fail("spool vanished".into()))?;
        dropped.write(b"never finished")?;
        drop(dropped);
        if b.list("data/")?.len() != before + 1 {
            return Err(fail("a spool left other objects listed".into()));
        }
        b.remove("data/cd/spooled")?;
    }
    // ranges
    if b.read_range("data/ab/obj1", 1000, 50)? != data[1000..1050] {
        return Err(fail("read_range returned other bytes".into()));
    }
    if b.read_range("data/ab/obj1", 0, data.len() as u64)? != data {
        return Err(fail("full read_range differs".into()));
    }
    if b.read_range("data/ab/obj1", data.len() as u64 - 10, 20)
        .is_ok()
    {
        return Err(fail("read_range past the end succeeded".into()));
    }
    // pieces of one span: only they come back, in order
    let pieces = [(7, 3), (1000, 50), (1050, 1), (data.len() as u64 - 9, 9)];
    let want: Vec<u8> = pieces
        .iter()
        .flat_map(|&(o, l)| data[o as usize..(o + l) as usize].to_vec())
        .collect();
    if b.read_pieces("data/ab/obj1", &pieces)? != want {
        return Err(fail("read_pieces returned other bytes".into()));
    }
    if b.read_pieces("data/ab/obj1", &[(data.len() as u64 - 5, 10)])
        .is_ok()
    {
        return Err(fail("read_pieces past the end succeeded".into()));
    }
    if b.size("data/ab/obj1")? != data.len() as u64 {
        return Err(fail("size differs from the stored length".into()));
    }
    match b.size("snapshots/missing") {
        Err(Error::NotFound { .. }) => {}
        other => return Err(fail(format!("size of a missing object gave {other:?}"))),
    }
    // missing objects
    match b.read("snapshots/missing") {
        Err(Error::NotFound { .. }) => {}
        other => return Err(fail(format!("read of a missing object gave {other:?}"))),
    }
    match b.read_range("snapshots/missing", 0, 1) {
        Err(Error::NotFound { .. }) => {}
        other => {
            return Err(fail(format!(
                "read_range of a missing object gave {other:?}"
            )))
        }
    }
    // empty object
    b.create("snapshots/empty", b"")?;
    if !b.read("snapshots/empty")?.is_empty() {
        return Err(fail("empty object not empty".into()));
    }
    // list
    b.create("data/cd/obj2", b"xyz")?;
    let mut listed = b.list("data/")?;
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    let want = vec![
        ObjectInfo {
            path: "data/ab/obj1".into(),
            size: data.len() as u64,
        },
        ObjectInfo {
            path: "data/cd/obj2".into(),
            size: 3,
        },
    ];
    if listed != want {
        return Err(fail(format!("list gave {listed:?}, wanted {want:?}")));
    }
    if !b.list("index/")?.is_empty() {
        return Err(fail("list of an empty prefix is not empty".into()));
    }
    // remove (idempotent)
    b.remove("data/cd/obj2")?;
    b.remove("data/cd/obj2")?;
    if b.read("data/cd/obj2").is_ok() {
        return Err(fail("removed object still readable".into()));
    }
    let after: Vec<_> = b.list("data/")?.into_iter().map(|o| o.path).collect();
    if after != vec!["data/ab/obj1".to_string()] {
        return Err(fail(format!("list after remove gave {after:?}")));
    }
    // clean up so the backend can be reused
    for o in b.list("")? {
        b.remove(&o.path)?;
    }
    Ok(())
}
