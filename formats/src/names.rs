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

#[cfg(test)]
mod tests {
    #[test]
    fn controls_are_escaped() {
        assert_eq!(super::display("we\"ird\nname"), "we\"ird\\nname");
        assert_eq!(super::display("a\u{7}"), "a\\u{7}");
        assert_eq!(super::display("Kunden Ü"), "Kunden Ü");
    }
}
