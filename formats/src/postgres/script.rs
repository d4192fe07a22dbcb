//! One table out of a pg_dump plain-format snapshot: its definition, sequences, defaults,
//! comments, indexes, constraints and triggers, picked from the pre-data and post-data
//! sections by their table-of-contents entries, optionally renamed, as a psql script.

use crate::postgres::ident::{pg_ident, qualified};
use crate::postgres::toc::{parse_toc, TocHeader};

/// One table-of-contents entry (or the preamble, which has no header).
#[derive(Clone, Debug)]
pub struct Entry {
    /// The parsed `-- Name: …` line.
    pub header: Option<TocHeader>,
    /// The entry's text, comment block included.
    pub text: String,
}

/// Splits a section's text into entries; the first one is the preamble, and the closing
/// block of a dump, if present, is a last entry without a header.
pub fn entries(text: &str) -> Vec<Entry> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = vec![Entry {
        header: None,
        text: String::new(),
    }];
    for (i, line) in lines.iter().enumerate() {
        if *line == "--\n" {
            let next = lines.get(i + 1).copied().unwrap_or("");
            if let Some(h) = parse_toc(next.as_bytes()) {
                out.push(Entry {
                    header: Some(h),
                    text: String::new(),
                });
            } else if next == "-- PostgreSQL database dump complete\n" {
                // The closing block (and `\unrestrict`) belongs to no entry.
                out.push(Entry {
                    header: None,
                    text: String::new(),
                });
            }
        }
        if let Some(last) = out.last_mut() {
            last.text.push_str(line);
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Replaces `from` by `to` where `from` stands as a whole (qualified) identifier.
fn replace_ident(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(p) = rest.find(from) {
        // The character before the match: in the unscanned text, or the last one written.
        let before = if p > 0 {
            rest[..p].chars().last()
        } else {
            out.chars().last()
        };
        let after = rest[p + from.len()..].chars().next();
        let ok_before = before.is_none_or(|c| !is_ident_char(c) && c != '"' && c != '.');
        let ok_after = after.is_none_or(|c| !is_ident_char(c) && (c != '"' || from.ends_with('"')));
        out.push_str(&rest[..p]);
        out.push_str(if ok_before && ok_after { to } else { from });
        rest = &rest[p + from.len()..];
    }
    out.push_str(rest);
    out
}

/// What belongs to one table.
#[derive(Debug, Default)]
pub struct TableScript {
    /// Preamble (SET statements, `\restrict`).
    pub preamble: String,
    /// Definition entries from pre-data (table, sequences, defaults, comments, grants).
    pub schema: Vec<String>,
    /// Entries from post-data (sequence values, constraints, indexes, triggers, comments).
    pub post: Vec<String>,
    /// The key of `\restrict`, to close with `\unrestrict`.
    pub restrict_key: Option<String>,
    renames: Vec<(String, String)>,
    unqualified: Vec<(String, String)>,
}

fn derive_name(old: &str, table: &str, new: &str) -> String {
    let mut n = match old.strip_prefix(table) {
        Some(rest) => format!("{new}{rest}"),
        None => format!("{new}_{old}"),
    };
    while n.len() > 63 {
        n.pop();
    }
    n
}

/// Picks the entries of table `schema.table` out of the pre-data and post-data sections;
/// with `new_name`, renames the table, its sequences, indexes and constraints.
pub fn table_script(
    pre: &str,
    post: &str,
    schema: &str,
    table: &str,
    new_name: Option<&str>,
) -> TableScript {
    let pre = entries(pre);
    let post = entries(post);
    let qt = qualified(schema, table);
    let mut ts = TableScript {
        preamble: pre[0].text.clone(),
        ..Default::default()
    };
    ts.restrict_key = ts
        .preamble
        .lines()
        .find_map(|l| l.strip_prefix("\\restrict ").map(|k| k.trim().to_string()));
    // pg_dump's header comments write a newline in a name as a space; a name holding one
    // is matched by that spelling, and each entry must then name the table exactly.
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    let (schema_h, table_h) = (one_line(schema), one_line(table));
    let mangled = schema_h != schema || table_h != table;
    let in_schema = |h: &TocHeader| h.schema == schema_h;
    let table = table_h.as_str();
    let mut seqs: Vec<String> = Vec::new();
    for e in pre.iter().chain(post.iter()) {
        let Some(h) = &e.header else { continue };
        if !in_schema(h) {
            continue;
        }
        let owned = h.kind == "SEQUENCE OWNED BY" && e.text.contains(&format!("OWNED BY {qt}."));
        let identity = h.kind == "SEQUENCE"
            && (e.text.contains(&format!("ALTER TABLE {qt} ALTER COLUMN"))
                || e.text
                    .contains(&format!("ALTER TABLE ONLY {qt} ALTER COLUMN")));
        if (owned || identity) && !seqs.contains(&h.name) {
            seqs.push(h.name.clone());
        }
    }
    let mut indexes: Vec<String> = Vec::new();
    let mut constraints: Vec<String> = Vec::new();
    let table_prefix = format!("{table} ");
    let belongs = |h: &TocHeader,
                   text: &str,
                   indexes: &mut Vec<String>,
                   constraints: &mut Vec<String>|
     -> bool {
        if !in_schema(h) {
            return false;
        }
        if mangled && !h.kind.starts_with("SEQUENCE") && h.kind != "INDEX" && !text.contains(&qt) {
            return false;
        }
        match h.kind.as_str() {
            "TABLE" => h.name == table,
            "SEQUENCE" | "SEQUENCE OWNED BY" | "SEQUENCE SET" => seqs.contains(&h.name),
            "DEFAULT" => h.name.starts_with(&table_prefix),
            "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" => {
                let hit = h.name.starts_with(&table_prefix);
                if hit {
                    constraints.push(h.name[table_prefix.len()..].to_string());
                }
                hit
            }
            "TRIGGER" | "RULE" | "POLICY" | "ROW SECURITY" => {
                h.name.starts_with(&table_prefix) || h.name == table
            }
            "INDEX" => {
                let hit = text.contains(&format!(" ON {qt} "))
                    || text.contains(&format!(" ON ONLY {qt} "));
                if hit {
                    indexes.push(h.name.clone());
                }
                hit
            }
            "COMMENT" | "ACL" => {
                h.name == format!("TABLE {table}")
                    || h.name.starts_with(&format!("COLUMN {table}."))
                    || h.name
                        .strip_prefix("INDEX ")
                        .is_some_and(|i| indexes.iter().any(|x| x == i))
                    || h.name.ends_with(&format!(" ON {table}"))
                        && h.name.starts_with("CONSTRAINT ")
                    || h.name
                        .strip_prefix("SEQUENCE ")
                        .is_some_and(|s| seqs.iter().any(|x| x == s))
            }
            _ => false,
        }
    };
    for e in &pre {
        if let Some(h) = &e.header {
            if belongs(h, &e.text, &mut indexes, &mut constraints) {
                ts.schema.push(e.text.clone());
            }
        }
    }
    for e in &post {
        if let Some(h) = &e.header {
            if belongs(h, &e.text, &mut indexes, &mut constraints) {
                ts.post.push(e.text.clone());
            }
        }
    }
    if let Some(new) = new_name {
        ts.renames.push((qt.clone(), qualified(schema, new)));
        for s in &seqs {
            ts.renames.push((
                qualified(schema, s),
                qualified(schema, &derive_name(s, table, new)),
            ));
        }
        for i in &indexes {
            let n = derive_name(i, table, new);
            ts.renames
                .push((qualified(schema, i), qualified(schema, &n)));
            ts.unqualified.push((
                format!("INDEX {} ON", pg_ident(i)),
                format!("INDEX {} ON", pg_ident(&n)),
            ));
        }
        for c in &constraints {
            let n = derive_name(c, table, new);
            ts.unqualified.push((
                format!("CONSTRAINT {} ", pg_ident(c)),
                format!("CONSTRAINT {} ", pg_ident(&n)),
            ));
        }
        let schema: Vec<String> = ts.schema.iter().map(|t| ts.rename(t)).collect();
        let post: Vec<String> = ts.post.iter().map(|t| ts.rename(t)).collect();
        ts.schema = schema;
        ts.post = post;
    }
    ts
}

impl TableScript {
    /// Applies the renames to a piece of SQL (e.g. the data part's COPY line).
    pub fn rename(&self, sql: &str) -> String {
        let mut s = sql.to_string();
        for (from, to) in &self.renames {
            s = replace_ident(&s, from, to);
        }
        for (from, to) in &self.unqualified {
            s = s.replace(from.as_str(), to.as_str());
        }
        s
    }

    /// Closing text: `\unrestrict` when the preamble restricted.
    pub fn epilogue(&self) -> String {
        match &self.restrict_key {
            Some(k) => format!("\n\\unrestrict {k}\n"),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRE: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict K1\n\nSET x = 1;\n\n--\n-- Name: orders; Type: TABLE; Schema: public; Owner: me\n--\n\nCREATE TABLE public.orders (\n    id bigint NOT NULL,\n    note text\n);\n\n--\n-- Name: orders_id_seq; Type: SEQUENCE; Schema: public; Owner: me\n--\n\nCREATE SEQUENCE public.orders_id_seq;\n\n--\n-- Name: orders_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: me\n--\n\nALTER SEQUENCE public.orders_id_seq OWNED BY public.orders.id;\n\n--\n-- Name: orders_x; Type: TABLE; Schema: public; Owner: me\n--\n\nCREATE TABLE public.orders_x (a int);\n\n--\n-- Name: orders id; Type: DEFAULT; Schema: public; Owner: me\n--\n\nALTER TABLE ONLY public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq'::regclass);\n\n";
    const POST: &str = "--\n-- Name: orders_id_seq; Type: SEQUENCE SET; Schema: public; Owner: me\n--\n\nSELECT pg_catalog.setval('public.orders_id_seq', 5, true);\n\n--\n-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: me\n--\n\nALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);\n\n--\n-- Name: idx_note; Type: INDEX; Schema: public; Owner: me\n--\n\nCREATE INDEX idx_note ON public.orders USING btree (note);\n\n--\n-- Name: idx_x; Type: INDEX; Schema: public; Owner: me\n--\n\nCREATE INDEX idx_x ON public.orders_x USING btree (a);\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict K1\n\n";

    #[test]
    fn picks_the_table_and_what_hangs_off_it() {
        let ts = table_script(PRE, POST, "public", "orders", None);
        let schema = ts.schema.concat();
        assert!(schema.contains("CREATE TABLE public.orders ("));
        assert!(!schema.contains("orders_x"));
        assert!(schema.contains("CREATE SEQUENCE public.orders_id_seq"));
        assert!(schema.contains("SET DEFAULT nextval"));
        let post = ts.post.concat();
        assert!(
            post.contains("setval") && post.contains("orders_pkey") && post.contains("idx_note")
        );
        assert!(!post.contains("idx_x") && !post.contains("dump complete"));
        assert_eq!(ts.restrict_key.as_deref(), Some("K1"));
    }

    #[test]
    fn renames_consistently() {
        let ts = table_script(PRE, POST, "public", "orders", Some("orders_old"));
        let all = format!("{}{}", ts.schema.concat(), ts.post.concat());
        assert!(all.contains("CREATE TABLE public.orders_old ("));
        assert!(all.contains("CREATE SEQUENCE public.orders_old_id_seq"));
        assert!(all.contains("OWNED BY public.orders_old.id"));
        assert!(all.contains("nextval('public.orders_old_id_seq'::regclass)"));
        assert!(all.contains("setval('public.orders_old_id_seq'"));
        assert!(all.contains("ADD CONSTRAINT orders_old_pkey PRIMARY KEY"));
        assert!(all.contains("CREATE INDEX orders_old_idx_note ON public.orders_old USING"));
        assert!(!all.contains("public.orders ") && !all.contains("public.orders."));
        assert_eq!(
            ts.rename("COPY public.orders (id, note) FROM stdin;"),
            "COPY public.orders_old (id, note) FROM stdin;"
        );
    }

    #[test]
    fn quoting_follows_pg_dump() {
        assert_eq!(pg_ident("orders"), "orders");
        assert_eq!(pg_ident("Orders"), "\"Orders\"");
        assert_eq!(pg_ident("user"), "\"user\"");
        assert_eq!(pg_ident("ünï"), "\"ünï\"");
        assert_eq!(qualified("s", "a\"b"), "s.\"a\"\"b\"");
    }
}
