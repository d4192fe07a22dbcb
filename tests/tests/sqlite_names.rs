//! SQLite table names are data: a newline, a double quote, non-ASCII letters. Each is
//! listed on one line (escaped), counted, restore-tested, addressable with `--table` in the
//! spelling `ls` shows, and restored with every row, alone and with the whole file.

use std::path::Path;

use dbvault_tests::{sqlite3, sqlite3_dump, Repo};

/// The rows of table `quoted` (an SQL identifier), one per line, in id order.
fn rows(db: &Path, quoted: &str) -> String {
    sqlite3(db, &format!("SELECT id, v FROM {quoted} ORDER BY id;"))
}

#[test]
fn tables_named_with_newlines_quotes_and_unicode_round_trip() {
    let repo = Repo::new();
    let dir = repo.dir.path();
    let app = dir.join("app.db");
    // (identifier as SQL, the name, the spelling `ls` shows, rows)
    let tables = [
        ("\"new\nline\"", "new\nline", "new\\nline", 10),
        ("\"q\"\"uote\"", "q\"uote", "q\"uote", 20),
        ("\"Kunden Ü\"", "Kunden Ü", "Kunden Ü", 30),
    ];
    let mut script = String::from("PRAGMA journal_mode=WAL;\n");
    for (q, _, _, n) in &tables {
        script.push_str(&format!(
            "CREATE TABLE {q} (id INTEGER PRIMARY KEY, v TEXT);\n\
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
             INSERT INTO {q} SELECT i, 'row ' || i || ' of ' || {n} FROM s;\n"
        ));
    }
    sqlite3(&app, &script);
    repo.run(
        &[
            "backup",
            &format!("sqlite:{}", app.display()),
            "--name",
            "app",
        ],
        None,
    )
    .ok();

    // Listed faithfully: one line each in text, the exact name and count in JSON.
    let ls = repo
        .run(&["ls", "latest", "--name", "app"], None)
        .ok()
        .text();
    for (_, _, shown, n) in &tables {
        assert!(
            ls.lines()
                .any(|l| l.starts_with(shown) && l.contains(&format!(" {n} "))),
            "{shown}: {ls}"
        );
    }
    assert!(!ls.lines().any(|l| l.starts_with("line")), "{ls}");
    let j = repo
        .run(&["ls", "latest", "--name", "app", "--json"], None)
        .ok()
        .json();
    let text = j.to_string();
    assert!(text.contains("new\\nline"), "the JSON name: {text}");

    // Restore-tested, one line per table.
    let t = repo
        .run(&["restore-test", "latest", "--name", "app"], None)
        .ok()
        .text();
    assert!(t.contains("PASSED"), "{t}");
    for (_, _, shown, n) in &tables {
        assert!(
            t.lines()
                .any(|l| l.contains(shown) && l.contains(&format!("{n} rows"))),
            "{shown}: {t}"
        );
    }

    // Each table by itself, by the spelling `ls` shows, into one new file.
    let out = dir.join("out.db");
    for (q, _, shown, n) in &tables {
        let r = repo
            .run(
                &[
                    "restore",
                    "latest",
                    "--name",
                    "app",
                    "--table",
                    shown,
                    "--to",
                    &format!("sqlite:{}", out.display()),
                ],
                None,
            )
            .ok();
        assert!(r.stderr.contains(&format!("({n} rows)")), "{}", r.stderr);
        assert_eq!(rows(&out, q), rows(&app, q), "{shown}");
    }
    // The name itself, too (a real newline in the argument).
    let again = dir.join("again.db");
    repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "app",
            "--table",
            tables[0].1,
            "--to",
            &format!("sqlite:{}", again.display()),
        ],
        None,
    )
    .ok();
    assert_eq!(rows(&again, tables[0].0), rows(&app, tables[0].0));

    // A name it lacks: one line, naming them all as `ls` shows them.
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "app",
            "--table",
            "nope",
            "--to",
            &format!("sqlite:{}", dir.join("x.db").display()),
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    let err: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(err.len(), 1, "{}", r.stderr);
    assert!(
        err[0].contains("new\\nline") && err[0].contains("Kunden Ü"),
        "{}",
        err[0]
    );

    // And the whole file.
    let whole = dir.join("whole.db");
    repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "app",
            "--to",
            &format!("sqlite:{}", whole.display()),
        ],
        None,
    )
    .ok();
    assert_eq!(sqlite3_dump(&whole), sqlite3_dump(&app));
}
