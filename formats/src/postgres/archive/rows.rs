//! The data of a table part: everything after its `COPY … FROM stdin;` line (the rows, the
//! `\.` that ends them and two blank lines). A custom-format archive's data block of the
//! table holds exactly these bytes, so they are what a backup proves equal and a restore
//! recompresses.

/// Where the rows go.
pub trait RowSink {
    /// Takes the next bytes of rows.
    fn rows(&mut self, bytes: &[u8]);
}

impl RowSink for blake3::Hasher {
    fn rows(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Inside a `COPY` statement that goes on over lines (a quoted name holding a
    /// newline): the double quotes seen so far.
    Statement(usize),
    Rows,
}

/// Picks the rows out of a table part's bytes, fed in any pieces.
pub struct RowsTap<S: RowSink> {
    sink: S,
    state: State,
    partial: Vec<u8>,
}

impl<S: RowSink> RowsTap<S> {
    /// A tap feeding `sink`.
    pub fn new(sink: S) -> Self {
        RowsTap {
            sink,
            state: State::Head,
            partial: Vec::new(),
        }
    }

    /// The next bytes of the part.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (line, complete) = match memchr::memchr(b'\n', data) {
                Some(i) => (&data[..=i], true),
                None => (data, false),
            };
            data = &data[line.len()..];
            if self.partial.is_empty() && complete {
                self.line(line);
            } else {
                self.partial.extend_from_slice(line);
                if complete {
                    let l = std::mem::take(&mut self.partial);
                    self.line(&l);
                }
            }
        }
    }

    fn line(&mut self, l: &[u8]) {
        let quotes = |l: &[u8]| l.iter().filter(|b| **b == b'"').count();
        match self.state {
            State::Head if l.starts_with(b"COPY ") => self.statement(l, quotes(l)),
            State::Statement(q) => self.statement(l, q + quotes(l)),
            State::Rows => self.sink.rows(l),
            State::Head => {}
        }
    }

    /// A line of the COPY statement, `quotes` double quotes into it: the rows start
    /// after the line that ends it outside a quoted name.
    fn statement(&mut self, l: &[u8], quotes: usize) {
        self.state = if quotes % 2 == 0 && l.ends_with(b" FROM stdin;\n") {
            State::Rows
        } else {
            State::Statement(quotes)
        };
    }

    /// The sink, once the part is fed.
    pub fn into_sink(self) -> S {
        self.sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keep(Vec<u8>);
    impl RowSink for Keep {
        fn rows(&mut self, b: &[u8]) {
            self.0.extend_from_slice(b);
        }
    }

    #[test]
    fn only_the_rows_pass_in_any_pieces() {
        let part = b"--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: me\n--\n\nCOPY public.t (a) FROM stdin;\n1\tx\n\\\\.\n2\t\\N\n\\.\n\n\n";
        for step in [1, 2, 3, 7, part.len()] {
            let mut t = RowsTap::new(Keep(Vec::new()));
            for piece in part.chunks(step) {
                t.feed(piece);
            }
            assert_eq!(
                t.into_sink().0,
                b"1\tx\n\\\\.\n2\t\\N\n\\.\n\n\n",
                "pieces of {step}"
            );
        }
    }
}
