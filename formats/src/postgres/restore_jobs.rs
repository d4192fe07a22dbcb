//! The work queue of a database restore's data phase: table loads, largest first, and each
//! foreign key as soon as both its tables are loaded and indexed, never two at once on the
//! same table.
//!
//! Why: validating a foreign key scans both tables, and doing every key after the last
//! table left a core idle through the end of the load and the start of the key checks
//! (measured at shopbench scale 1: the key phase was a fifth of the restore). `pg_restore -j`
//! schedules them the same way. Adding a foreign key takes a SHARE ROW EXCLUSIVE lock on
//! both tables, which conflicts with itself: two keys touching one table would only wait
//! for each other, so such a pair is not started together.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};

use dbvault_core::Part;

use crate::error::{FormatError, Result};

/// A foreign key whose two tables are both loaded by this restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    /// The part names of the table it is on and of the table it references.
    pub tables: [String; 2],
    /// The size of the larger table: larger ones are started first.
    pub cost: u64,
    /// Whether an index of the referencing table leads with the key's columns (see
    /// `restore_db::add_key`).
    pub indexed: bool,
    /// The statement (pg_dump's entry).
    pub sql: String,
}

/// One piece of work for a restore session.
pub(crate) enum Job<'a> {
    /// Load a table's rows and build its keys and indexes.
    Table(&'a Part),
    /// Add a foreign key.
    Key(ForeignKey),
}

struct State<'a> {
    /// Tables still to load, smallest first (popped from the end).
    tables: Vec<&'a Part>,
    /// Tables loading now.
    loading: usize,
    /// Tables loaded and indexed (part names).
    done: HashSet<String>,
    /// Keys waiting for a table, or for a running key on one of their tables.
    keys: Vec<ForeignKey>,
    /// Tables a running key holds locked.
    locked: HashSet<String>,
    failed: bool,
}

/// The shared queue: [`Jobs::next`] hands out work, [`Jobs::finished`] reports it done.
pub(crate) struct Jobs<'a> {
    state: Mutex<State<'a>>,
    changed: Condvar,
}

fn poisoned() -> FormatError {
    FormatError::io("restore work queue", std::io::Error::other("poisoned"))
}

impl<'a> Jobs<'a> {
    /// A queue over `tables` and the `keys` among them.
    pub fn new(tables: Vec<&'a Part>, keys: Vec<ForeignKey>) -> Jobs<'a> {
        let mut tables = tables;
        tables.sort_by_key(|p| p.size);
        let mut keys = keys;
        keys.sort_by(|a, b| b.cost.cmp(&a.cost));
        Jobs {
            state: Mutex::new(State {
                tables,
                loading: 0,
                done: HashSet::new(),
                keys,
                locked: HashSet::new(),
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State<'a>>> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// The next job; `None` when nothing is left that this phase can run (or a session
    /// failed). Waits while the only keys left wait for tables still loading or keys
    /// still running.
    ///
    /// # Errors
    /// Only a poisoned lock (a session panicked).
    pub fn next(&self) -> Result<Option<Job<'a>>> {
        let mut s = self.lock()?;
        loop {
            if s.failed {
                return Ok(None);
            }
            // Tables first: every key waits for them, and the largest take longest.
            if let Some(p) = s.tables.pop() {
                s.loading += 1;
                return Ok(Some(Job::Table(p)));
            }
            let ready = s.keys.iter().position(|k| {
                k.tables
                    .iter()
                    .all(|t| s.done.contains(t) && !s.locked.contains(t))
            });
            if let Some(i) = ready {
                let k = s.keys.remove(i);
                for t in &k.tables {
                    s.locked.insert(t.clone());
                }
                return Ok(Some(Job::Key(k)));
            }
            // A key can still become ready only when something is loading or running.
            if s.keys.is_empty() || (s.loading == 0 && s.locked.is_empty()) {
                return Ok(None);
            }
            s = self.changed.wait(s).map_err(|_| poisoned())?;
        }
    }

    /// Reports a job done (`ok`) or failed: a failure stops every session at its next
    /// call to [`Jobs::next`].
    ///
    /// # Errors
    /// Only a poisoned lock.
    pub fn finished(&self, job: &Job<'a>, ok: bool) -> Result<()> {
        let mut s = self.lock()?;
        match job {
            Job::Table(p) => {
                s.loading -= 1;
                if ok {
                    s.done.insert(p.name.clone());
                }
            }
            Job::Key(k) => {
                for t in &k.tables {
                    s.locked.remove(t);
                }
            }
        }
        s.failed |= !ok;
        self.changed.notify_all();
        Ok(())
    }

    /// The keys never started (a table of theirs failed or was not loaded).
    ///
    /// # Errors
    /// Only a poisoned lock.
    pub fn left(&self) -> Result<Vec<ForeignKey>> {
        Ok(std::mem::take(&mut self.lock()?.keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, size: u64) -> Part {
        Part {
            name: name.into(),
            kind: super::super::meta::TABLE_DATA.into(),
            size,
            rows: None,
            blake3: String::new(),
            chunks: 0,
            lists: Vec::new(),
            depth: 0,
            meta: Default::default(),
        }
    }

    fn key(on: &str, refs: &str, cost: u64) -> ForeignKey {
        ForeignKey {
            tables: [on.into(), refs.into()],
            cost,
            indexed: false,
            sql: format!("{on}->{refs}"),
        }
    }

    fn name(j: &Job<'_>) -> String {
        match j {
            Job::Table(p) => p.name.clone(),
            Job::Key(k) => k.sql.clone(),
        }
    }

    #[test]
    fn keys_start_when_their_tables_are_in_and_never_two_on_one_table() {
        let (a, b, c) = (part("a", 30), part("b", 20), part("c", 10));
        let keys = vec![key("a", "b", 30), key("a", "c", 30), key("b", "c", 20)];
        let jobs = Jobs::new(vec![&c, &a, &b], keys);
        let ja = jobs.next().unwrap().unwrap();
        let jb = jobs.next().unwrap().unwrap();
        let jc = jobs.next().unwrap().unwrap();
        assert_eq!([name(&ja), name(&jb), name(&jc)], ["a", "b", "c"]);
        jobs.finished(&jb, true).unwrap();
        jobs.finished(&jc, true).unwrap();
        // b and c are in: b->c can start, a's keys wait for a.
        let k1 = jobs.next().unwrap().unwrap();
        assert_eq!(name(&k1), "b->c");
        jobs.finished(&ja, true).unwrap();
        jobs.finished(&k1, true).unwrap();
        let k2 = jobs.next().unwrap().unwrap();
        assert_eq!(name(&k2), "a->b");
        // a->c shares a with the running a->b: a second session waits until it ends.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| name(&jobs.next().unwrap().unwrap()));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiter.is_finished(), "a->c started beside a->b");
            jobs.finished(&k2, true).unwrap();
            assert_eq!(waiter.join().unwrap(), "a->c");
        });
        assert!(jobs.left().unwrap().is_empty());
    }

    #[test]
    fn a_failed_table_stops_the_queue_and_leaves_its_keys() {
        let (a, b) = (part("a", 2), part("b", 1));
        let jobs = Jobs::new(vec![&a, &b], vec![key("a", "b", 2)]);
        let ja = jobs.next().unwrap().unwrap();
        let jb = jobs.next().unwrap().unwrap();
        jobs.finished(&jb, true).unwrap();
        jobs.finished(&ja, false).unwrap();
        assert!(jobs.next().unwrap().is_none());
        assert_eq!(jobs.left().unwrap().len(), 1);
    }
}
