//! Warnings the library meets on the way (a damaged index file it worked around): a front
//! end chooses where they go ([`set_sink`]); without one they are dropped.

use std::sync::OnceLock;

static SINK: OnceLock<fn(&str)> = OnceLock::new();

/// Sends every later warning to `f` (the first call wins).
pub fn set_sink(f: fn(&str)) {
    let _ = SINK.set(f);
}

/// One warning line (the other libraries send theirs here too, so a front end sets one
/// sink for all).
pub fn warn(line: &str) {
    if let Some(f) = SINK.get() {
        f(line);
    }
}
