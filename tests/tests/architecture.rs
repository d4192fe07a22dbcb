//! The crates' shape, checked on the sources: dependencies go one way (cli → jobs →
//! formats → core), and within each crate no module needs another that needs it back
//! (a circle of files means a helper sits in the wrong place: the formats crate had one of
//! nine files until `ident`, `session` and `physical::push` took theirs).
//!
//! A module's edges are the `crate::…` and `super::…` paths it names outside comments and
//! its tests, resolved to the longest module path they start with; a module naming its own
//! parent or child is not an edge (that is how Rust nests them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Module path (`a::b`) → file, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string (a URL) cuts the rest of the line: paths after it on
            // the same line are rare and only ever make an edge missing, never one false.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `crate::`/`super::` paths named in `text`, as (supers, segments): `crate::a::b` is
/// (None, [a, b]); `super::super::c` is (Some(2), [c]).
fn paths(text: &str) -> Vec<(Option<usize>, Vec<String>)> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let at_word = i == 0 || !is_ident(b[i - 1] as char);
        let rest = &text[i..];
        let start = if !at_word {
            None
        } else if rest.starts_with("crate::") {
            Some((None, "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut n = 0;
            let mut r = rest;
            while let Some(x) = r.strip_prefix("super::") {
                n += 1;
                r = x;
            }
            Some((Some(n), rest.len() - r.len()))
        } else {
            None
        };
        let Some((supers, skip)) = start else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let mut segs = Vec::new();
        let mut r = &rest[skip..];
        loop {
            let n = r.find(|c: char| !is_ident(c)).unwrap_or(r.len());
            if n == 0 {
                break;
            }
            segs.push(r[..n].to_string());
            match r[n..].strip_prefix("::") {
                Some(x) => r = x,
                None => break,
            }
        }
        i += skip + 1;
        out.push((supers, segs));
    }
    out
}

/// Module → the modules it names.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &mods {
        let parts: Vec<&str> = if m.is_empty() {
            Vec::new()
        } else {
            m.split("::").collect()
        };
        let set = out.entry(m.clone()).or_default();
        for (supers, segs) in paths(&code(file)) {
            let base: Vec<&str> = match supers {
                None => Vec::new(),
                Some(n) => parts[..parts.len().saturating_sub(n)].to_vec(),
            };
            let target = (1..=segs.len()).rev().find_map(|k| {
                let mut p: Vec<&str> = base.clone();
                p.extend(segs[..k].iter().map(String::as_str));
                let name = p.join("::");
                mods.contains_key(&name).then_some(name)
            });
            let Some(t) = target else { continue };
            let nested = |a: &str, b: &str| a.is_empty() || b.starts_with(&format!("{a}::"));
            if t != *m && !nested(&t, m) && !nested(m, &t) {
                set.insert(t);
            }
        }
    }
    out
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("low");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_crate_has_a_circle_of_modules() {
    let mut found = Vec::new();
    for krate in ["core", "formats", "jobs", "cli"] {
        let g = edges(&root().join(krate).join("src"));
        assert!(g.len() > 3, "{krate}: too few modules found");
        for c in circles(&g) {
            let detail: Vec<String> = c
                .iter()
                .map(|m| {
                    let to: Vec<&str> = g[m]
                        .iter()
                        .filter(|x| c.contains(x))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {to:?}")
                })
                .collect();
            found.push(format!("{krate}: {}", detail.join("; ")));
        }
    }
    assert!(found.is_empty(), "module circles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_circle_when_there_is_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").expect("lib");
    std::fs::write(src.join("a/mod.rs"), "pub mod x;\nuse crate::b::thing;\n").expect("a");
    std::fs::write(src.join("a/x.rs"), "// crate::b in a comment\nfn f() {}\n").expect("x");
    std::fs::write(
        src.join("b.rs"),
        "pub fn thing() { super::a::x::f() }\n#[cfg(test)]\nmod t { use crate::a; }\n",
    )
    .expect("b");
    let g = edges(src);
    assert!(circles(&g).is_empty(), "a -> b -> a::x is no circle: {g:?}");
    std::fs::write(src.join("a/x.rs"), "fn f() { crate::b::thing() }\n").expect("x");
    let g = edges(src);
    assert_eq!(
        circles(&g),
        vec![vec!["a::x".to_string(), "b".into()]],
        "{g:?}"
    );
}

#[test]
fn dependencies_go_one_way() {
    let deps = |krate: &str| {
        std::fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("Cargo.toml")
    };
    let uses = |krate: &str, other: &str| deps(krate).contains(&format!("{other}."));
    assert!(!uses("core", "dbvault-formats") && !uses("core", "dbvault-jobs"));
    assert!(!uses("formats", "dbvault-jobs") && !uses("formats", "dbvault ="));
    assert!(uses("jobs", "dbvault-formats") && uses("jobs", "dbvault-core"));
    assert!(uses("cli", "dbvault-jobs"));
    // The binary's crate is not a library anyone depends on.
    for k in ["core", "formats", "jobs"] {
        assert!(!deps(k).contains("\ndbvault.workspace"), "{k}");
    }
}
