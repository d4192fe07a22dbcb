//! SQLite identifiers in SQL text: quoting, and renaming a table (and what refers to it)
//! inside CREATE statements.

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str, String), // raw text, unquoted value
    Other(&'a str),
}

fn tokens(sql: &str) -> Vec<Tok<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        if c == b'"' || c == b'`' || c == b'[' {
            let close = if c == b'[' { b']' } else { c };
            i += 1;
            let mut val = String::new();
            while i < b.len() {
                if b[i] == close {
                    if close != b']' && i + 1 < b.len() && b[i + 1] == close {
                        val.push(close as char);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let ch_len = utf8_len(b[i]);
                val.push_str(&sql[i..(i + ch_len).min(b.len())]);
                i += ch_len;
            }
            out.push(Tok::Ident(&sql[start..i], val));
        } else if c == b'\'' {
            i += 1;
            while i < b.len() {
                if b[i] == b'\'' {
                    if i + 1 < b.len() && b[i + 1] == b'\'' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push(Tok::Other(&sql[start..i]));
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Tok::Other(&sql[start..i]));
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(b.len());
            out.push(Tok::Other(&sql[start..i]));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            let w = &sql[start..i];
            out.push(Tok::Ident(w, w.to_string()));
        } else {
            i += utf8_len(c);
            out.push(Tok::Other(&sql[start..i.min(b.len())]));
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

const KEYWORDS_BEFORE_NAME: &[&str] = &[
    "CREATE",
    "TEMP",
    "TEMPORARY",
    "UNIQUE",
    "TABLE",
    "INDEX",
    "TRIGGER",
    "VIEW",
    "IF",
    "NOT",
    "EXISTS",
];

/// Rewrites a CREATE TABLE / INDEX / TRIGGER statement: the object's own name becomes
/// `object_name` (for a table: `new_table`), and every identifier naming table `old_table`
/// becomes `new_table` (the ON clause of an index or trigger, a trigger's body, a
/// self-referencing foreign key).
pub fn rename_object(
    sql: &str,
    old_table: &str,
    new_table: &str,
    object_name: Option<&str>,
) -> String {
    let toks = tokens(sql);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut seen_name = false;
    let mut is_table = false;
    let mut prev_word = String::new();
    for t in &toks {
        match t {
            Tok::Ident(raw, val) => {
                let upper = raw.to_ascii_uppercase();
                let after_references = prev_word == "REFERENCES";
                prev_word = upper.clone();
                if !seen_name && raw == val && KEYWORDS_BEFORE_NAME.contains(&upper.as_str()) {
                    if upper == "TABLE" {
                        is_table = true;
                    }
                    out.push_str(raw);
                } else if !seen_name {
                    seen_name = true;
                    let name = if is_table {
                        Some(new_table)
                    } else {
                        object_name
                    };
                    match name {
                        Some(n) => out.push_str(&quote_ident(n)),
                        None => out.push_str(raw),
                    }
                } else if val.eq_ignore_ascii_case(old_table) && !is_table {
                    out.push_str(&quote_ident(new_table));
                } else if is_table && after_references && val.eq_ignore_ascii_case(old_table) {
                    // a self-reference (REFERENCES t): keep it pointing at itself
                    out.push_str(&quote_ident(new_table));
                } else {
                    out.push_str(raw);
                }
            }
            Tok::Other(s) => out.push_str(s),
        }
    }
    out
}
