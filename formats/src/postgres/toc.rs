//! pg_dump's plain-format entry headers (`-- Name: …; Type: …; Schema: …; Owner: …`) and
//! the table a `COPY` statement names.

/// A parsed TOC comment line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocHeader {
    /// `Name:` field (for table data: the table).
    pub name: String,
    /// `Type:` field, e.g. `TABLE`, `TABLE DATA`, `INDEX`.
    pub kind: String,
    /// `Schema:` field (`-` when none).
    pub schema: String,
    /// `Owner:` field (`-` when none; empty when the line has none).
    pub owner: String,
}

/// Parses `-- Name: …; Type: …; Schema: …; Owner: …` (or `-- Data for Name: …`).
pub fn parse_toc(line: &[u8]) -> Option<TocHeader> {
    let s = std::str::from_utf8(line).ok()?.trim_end_matches('\n');
    let rest = s
        .strip_prefix("-- Data for Name: ")
        .or_else(|| s.strip_prefix("-- Name: "))?;
    // Fields are separated by "; Type: ", "; Schema: ", "; Owner: " (names may contain ';').
    let (name, rest) = rest.split_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    // `Owner: x` is absent when pg_dump ran with --no-owner; `Tablespace: y` may follow.
    let cut = |s: &'_ str| {
        s.split_once("; Tablespace: ")
            .map_or(s.to_string(), |(a, _)| a.to_string())
    };
    let (schema, owner) = match rest.split_once("; Owner: ") {
        Some((schema, owner)) => (schema.to_string(), cut(owner)),
        None => (cut(rest), String::new()),
    };
    Some(TocHeader {
        name: name.to_string(),
        kind: kind.to_string(),
        schema,
        owner,
    })
}

/// The schema and table a `COPY schema.table (…) FROM stdin;` statement names, unquoted:
/// the names as they are (pg_dump's header comments replace a newline in a name by a
/// space, so the statement is the authority).
pub fn copy_target(copy: &str) -> Option<(String, String)> {
    let mut rest = copy.strip_prefix("COPY ")?;
    let mut names = Vec::new();
    loop {
        let (name, after) = if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut it = q.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = it.next() {
                if c == '"' {
                    if it.peek().is_some_and(|(_, n)| *n == '"') {
                        out.push('"');
                        it.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    out.push(c);
                }
            }
            (out, &q[end?..])
        } else {
            let n = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len());
            if n == 0 {
                return None;
            }
            (rest[..n].to_string(), &rest[n..])
        };
        names.push(name);
        match after.strip_prefix('.') {
            Some(more) => rest = more,
            None => break,
        }
    }
    let table = names.pop()?;
    let schema = names.pop()?;
    names.is_empty().then_some((schema, table))
}
