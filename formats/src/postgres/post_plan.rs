//! A dump's post-data sorted into the phases of a database restore, like `pg_restore -j`
//! schedules it: each table's keys and indexes, foreign keys between loaded tables, and the
//! rest.
//!
//! Entries are matched to tables by looking the names that follow `ON`, `ALTER TABLE` and
//! `REFERENCES` up in a map, not by searching every entry for every table: that was
//! quadratic, a third of a second of CPU for 1,500 tables and minutes for 20,000.

use std::collections::HashMap;

use dbvault_core::Snapshot;

use super::meta::{tables, TablePart};
use super::restore_jobs::ForeignKey;

/// Post-data sorted into phases.
#[derive(Default)]
pub(crate) struct PostPlan {
    /// Keys and indexes of one table (by part name): built as soon as its data is in.
    pub per_table: HashMap<String, Vec<String>>,
    /// Keys and indexes of no loaded table, and sequence values: in parallel after the data.
    pub first: Vec<(u64, String)>,
    /// Foreign keys between two loaded tables: run by the data phase as soon as both
    /// tables are in.
    pub keys: Vec<ForeignKey>,
    /// Partitions' indexes attached to their parents' (which are invalid until then):
    /// after every index, before the foreign keys that may need a parent's key.
    pub attach: String,
    /// Other foreign keys: in parallel once every key they reference exists.
    pub fks: Vec<(u64, String)>,
    /// Triggers, comments, grants, materialized view refreshes: last, in dump order.
    pub rest: String,
}

/// The snapshot's tables by qualified name: (part name, size).
struct Tables(HashMap<String, (String, u64)>);

/// How far past a keyword a qualified name may reach (quoted names may hold spaces).
const NAME_MAX: usize = 1024;

impl Tables {
    /// The first table named right after `prefix` and ended by `stop`, as in
    /// `{prefix}{table}{stop}`.
    fn after(&self, text: &str, prefix: &str, stop: u8) -> Option<&(String, u64)> {
        text.match_indices(prefix).find_map(|(i, _)| {
            let start = i + prefix.len();
            let rest = &text.as_bytes()[start..text.len().min(start + NAME_MAX)];
            rest.iter()
                .enumerate()
                .filter(|(_, b)| **b == stop)
                .find_map(|(j, _)| text.get(start..start + j).and_then(|q| self.0.get(q)))
        })
    }

    /// The table an index or key is on.
    fn on(&self, text: &str) -> Option<&(String, u64)> {
        self.after(text, " ON ", b' ')
            .or_else(|| self.after(text, " ON ONLY ", b' '))
            .or_else(|| self.after(text, "ALTER TABLE ONLY ", b'\n'))
            .or_else(|| self.after(text, "ALTER TABLE ", b'\n'))
    }

    /// A scheduling weight: the size of the largest table the entry names (words looked
    /// up; a quoted name with spaces is missed, which only orders the work differently).
    fn cost(&self, text: &str) -> u64 {
        text.split(|c: char| c.is_whitespace() || "(),;".contains(c))
            .filter_map(|w| self.0.get(w))
            .map(|t| t.1)
            .max()
            .unwrap_or(0)
    }
}

/// Sorts the post-data `post` of `snap` into a [`PostPlan`].
pub(crate) fn plan_post(snap: &Snapshot, post: &str) -> crate::error::Result<PostPlan> {
    let names = Tables(
        tables(snap)
            .map(|p| Ok((TablePart::of(p)?.qualified(), (p.name.clone(), p.size))))
            .collect::<crate::error::Result<_>>()?,
    );
    let mut plan = PostPlan::default();
    for e in super::script::entries(post) {
        match e.header.as_ref().map(|h| h.kind.as_str()) {
            Some("INDEX" | "CONSTRAINT" | "CHECK CONSTRAINT") => match names.on(&e.text) {
                Some((name, _)) => plan.per_table.entry(name.clone()).or_default().push(e.text),
                None => plan.first.push((names.cost(&e.text), e.text)),
            },
            Some("SEQUENCE SET") => plan.first.push((0, e.text)),
            Some("INDEX ATTACH") => plan.attach.push_str(&e.text),
            Some("FK CONSTRAINT") => {
                match (
                    names.on(&e.text),
                    names.after(&e.text, " REFERENCES ", b'('),
                ) {
                    (Some(on), Some(refs)) => plan.keys.push(ForeignKey {
                        tables: [on.0.clone(), refs.0.clone()],
                        cost: on.1.max(refs.1),
                        indexed: false,
                        sql: e.text,
                    }),
                    _ => plan.fks.push((names.cost(&e.text), e.text)),
                }
            }
            Some(_) => plan.rest.push_str(&e.text),
            // The preamble and the closing block: each session brings its own.
            None => {}
        }
    }
    for k in &mut plan.keys {
        let indexes = plan.per_table.get(&k.tables[0]).into_iter().flatten();
        k.indexed = fk_columns(&k.sql).is_some_and(|fk| {
            indexes
                .filter_map(|i| index_columns(i))
                .any(|cols| cols.starts_with(&fk))
        });
    }
    Ok(plan)
}

/// The text between `(` at `at` and the next `)`, split at commas; `None` when it holds
/// another `(` (an expression).
fn column_list(text: &str, at: usize) -> Option<Vec<&str>> {
    let inner = &text[at..];
    let end = inner.find(')')?;
    let list = &inner[..end];
    (!list.contains('(')).then(|| list.split(',').map(str::trim).collect())
}

/// The referencing columns of a foreign key entry (`FOREIGN KEY (a, b) REFERENCES …`).
fn fk_columns(text: &str) -> Option<Vec<&str>> {
    const KEY: &str = "FOREIGN KEY (";
    column_list(text, text.find(KEY)? + KEY.len())
}

/// The columns of a primary key, unique constraint or plain b-tree index entry, in index
/// order. `None` for anything whose order a scan cannot follow over the whole table: a
/// partial index, an expression, a sort option (`DESC`, an operator class).
fn index_columns(text: &str) -> Option<Vec<&str>> {
    if text.contains(" WHERE ") {
        return None;
    }
    let cols = [
        " PRIMARY KEY (",
        " UNIQUE (",
        " UNIQUE NULLS NOT DISTINCT (",
        " USING btree (",
    ]
    .iter()
    .find_map(|k| text.find(k).map(|i| i + k.len()))
    .and_then(|at| column_list(text, at))?;
    let plain =
        |c: &&str| !c.contains(' ') || (c.len() > 1 && c.starts_with('"') && c.ends_with('"'));
    cols.iter().all(plain).then_some(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_key_is_indexed_when_an_index_leads_with_its_columns() {
        let fk = "ALTER TABLE ONLY public.items\n    ADD CONSTRAINT f FOREIGN KEY (order_id) REFERENCES public.orders(id);";
        assert_eq!(fk_columns(fk), Some(vec!["order_id"]));
        let pk =
            "ALTER TABLE ONLY public.items\n    ADD CONSTRAINT p PRIMARY KEY (order_id, line);";
        assert_eq!(index_columns(pk), Some(vec!["order_id", "line"]));
        let ix = "CREATE INDEX i ON public.items USING btree (product_id) INCLUDE (qty);";
        assert_eq!(index_columns(ix), Some(vec!["product_id"]));
        let un = "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (\"A b\", c);";
        assert_eq!(index_columns(un), Some(vec!["\"A b\"", "c"]));
        // Whose order a whole scan cannot follow.
        for no in [
            "CREATE INDEX i ON public.t USING btree (a) WHERE (a > 0);",
            "CREATE INDEX i ON public.t USING btree (lower(a));",
            "CREATE INDEX i ON public.t USING btree (a DESC);",
            "CREATE INDEX i ON public.t USING hash (a);",
        ] {
            assert_eq!(index_columns(no), None, "{no}");
        }
    }

    fn names() -> Tables {
        Tables(
            [("public.t", 10), ("public.t2", 20), ("public.\"my t\"", 30)]
                .into_iter()
                .map(|(q, n)| (q.to_string(), (q.to_string(), n)))
                .collect(),
        )
    }

    #[test]
    fn entries_are_matched_to_the_table_they_name() {
        let n = names();
        let on = |t: &str| n.on(t).map(|x| x.0.clone());
        assert_eq!(
            on("CREATE INDEX i ON public.t2 USING btree (a);").as_deref(),
            Some("public.t2")
        );
        assert_eq!(
            on("CREATE INDEX \"x ON y\" ON ONLY public.t USING btree (a);").as_deref(),
            Some("public.t")
        );
        assert_eq!(
            on("ALTER TABLE ONLY public.\"my t\"\n    ADD CONSTRAINT k PRIMARY KEY (id);")
                .as_deref(),
            Some("public.\"my t\"")
        );
        assert_eq!(
            on("ALTER TABLE ONLY public.other\n    ADD CONSTRAINT k;"),
            None
        );
        let fk = "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.\"my t\"(id);";
        assert_eq!(
            n.after(fk, " REFERENCES ", b'(').unwrap().0,
            "public.\"my t\""
        );
        assert_eq!(n.cost("CREATE INDEX i ON public.t2 USING btree (a);"), 20);
        assert_eq!(n.cost("SELECT 1;"), 0);
    }
}
