//! Names are data: a table may be called anything its database allows, a newline
//! included. For a terminal or a one-line message they are shown escaped.

/// `s` with control characters (a newline in a quoted identifier) escaped as `\\n`,
/// `\\t`, `\\r`, `\\u{…}`, so that one name stays on one line. `restore --table` takes
/// this spelling back.
pub fn display(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\t' => "\\t".to_string(),
            '\r' => "\\r".to_string(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// The inverse of [`display`]: `\n`, `\t`, `\r` and `\u{…}` as the characters they
/// stand for, so that the spelling `ls` shows names the table.
pub fn undisplay(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.peek().copied() {
            Some('n') => {
                it.next();
                out.push('\n');
            }
            Some('t') => {
                it.next();
                out.push('\t');
            }
            Some('r') => {
                it.next();
                out.push('\r');
            }
            Some('u') => {
                let rest: String = it.clone().collect();
                let code = rest
                    .strip_prefix("u{")
                    .and_then(|r| r.split_once('}'))
                    .and_then(|(h, _)| u32::from_str_radix(h, 16).ok().map(|v| (h.len(), v)))
                    .and_then(|(n, v)| char::from_u32(v).map(|ch| (n, ch)));
                match code {
                    Some((n, ch)) => {
                        for _ in 0..n + 3 {
                            it.next();
                        }
                        out.push(ch);
                    }
                    None => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_are_escaped() {
        assert_eq!(super::display("we\"ird\nname"), "we\"ird\\nname");
        assert_eq!(super::display("a\u{7}"), "a\\u{7}");
        assert_eq!(super::display("Kunden Ü"), "Kunden Ü");
    }
}
