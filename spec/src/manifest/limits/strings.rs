//! Strings, read exactly as strictly as `kdl` reads them. Where the parser fails
//! inside a string, its recovery reads what follows differently from us (a `{` we
//! took for text may open a block to it), so any doubt about a string is a syntax
//! error whose cost runs to the end of the text: the text is parsed only when that
//! rest is small.

use super::{is_newline, is_space, LimitError, Scanner};

/// `kdl`'s disallowed literal code points (`is_disallowed_unicode`), and DEL.
pub(super) fn is_disallowed(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}'
        | '\u{e}'..='\u{1f}'
        | '\u{7f}'
        | '\u{200e}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}')
}

impl Scanner<'_> {
    /// A string after its opening `"` (and `hashes` `#`s for a raw string); `"""`
    /// and a newline open a multi-line one.
    pub(super) fn quoted(&mut self, start: usize, hashes: usize) -> Result<(), LimitError> {
        if self.rest().starts_with("\"\"") {
            self.pos += 2;
            if !self.peek().is_some_and(is_newline) {
                return self.doubt(start, "a multi-line string must start with a newline");
            }
            return self.multi_line(start, hashes);
        }
        let close = format!("\"{}", "#".repeat(hashes));
        loop {
            if self.rest().starts_with(&close) {
                self.pos += close.len();
                return Ok(());
            }
            match self.bump() {
                None => return self.doubt(start, "this string is never closed"),
                Some(c) if is_newline(c) => {
                    return self.doubt(start, "this string is not closed on its line")
                }
                Some(c) if is_disallowed(c) => {
                    return self.doubt(start, "this string holds a character KDL disallows")
                }
                Some('\\') if hashes == 0 => {
                    if !self.escape() {
                        return self.doubt(start, "this string has an invalid escape");
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// The body of a multi-line string, from the newline after its `"""`: lines up
    /// to one holding only spaces and the closing quotes, whose indentation every
    /// other non-blank line must start with.
    fn multi_line(&mut self, start: usize, hashes: usize) -> Result<(), LimitError> {
        let close = format!("\"\"\"{}", "#".repeat(hashes));
        self.newline();
        let mut lines = Vec::new();
        loop {
            let line = self.pos;
            let indent = self
                .rest()
                .find(|c| !is_space(c))
                .unwrap_or(self.rest().len());
            if self.rest()[indent..].starts_with(&close) {
                let prefix = &self.text[line..line + indent];
                self.pos += indent + close.len();
                let text = self.text;
                let misaligned = lines.iter().any(|&(a, b): &(usize, usize)| {
                    let l = &text[a..b];
                    !l.starts_with(prefix) && !l.chars().all(is_space)
                });
                if misaligned {
                    return self.doubt(
                        start,
                        "the lines of a multi-line string must start with the indentation \
                         of its closing quotes",
                    );
                }
                return Ok(());
            }
            loop {
                if self.rest().starts_with(&close)
                    || (hashes == 0 && self.rest().starts_with("\"\"\""))
                {
                    return self.doubt(start, "a multi-line string closes on a line of its own");
                }
                let at = self.pos;
                match self.bump() {
                    None => return self.doubt(start, "this string is never closed"),
                    Some(c) if is_newline(c) => {
                        self.pos = at;
                        lines.push((line, at));
                        self.newline();
                        break;
                    }
                    Some(c) if is_disallowed(c) => {
                        return self.doubt(start, "this string holds a character KDL disallows")
                    }
                    Some('\\') if hashes == 0 => {
                        if !self.escape() {
                            return self.doubt(start, "this string has an invalid escape");
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// One newline (`\r\n` counts once).
    fn newline(&mut self) {
        if self.rest().starts_with("\r\n") {
            self.pos += 2;
        } else if let Some(c) = self.peek().filter(|&c| is_newline(c)) {
            self.pos += c.len_utf8();
        }
    }

    /// An escape after its `\`: one of `\\ \" \b \f \n \r \t \s`, `\u{1-6 hex}` naming
    /// a scalar value, or spaces and newlines (all of them are skipped).
    fn escape(&mut self) -> bool {
        match self.peek() {
            Some('\\' | '"' | 'b' | 'f' | 'n' | 'r' | 't' | 's') => {
                self.bump();
                true
            }
            Some('u') => {
                let rest = &self.rest()[1..];
                let Some(hex) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
                    return false;
                };
                let ok = (1..=6).contains(&hex.0.len())
                    && u32::from_str_radix(hex.0, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .is_some();
                if ok {
                    self.pos += 1 + 1 + hex.0.len() + 1;
                }
                ok
            }
            Some(c) if is_space(c) || is_newline(c) => {
                let n = self
                    .rest()
                    .find(|c: char| !is_space(c) && !is_newline(c))
                    .unwrap_or(self.rest().len());
                self.pos += n;
                true
            }
            _ => false,
        }
    }

    /// A syntax error inside a string: the parser may read the whole rest otherwise.
    fn doubt(&mut self, start: usize, what: &str) -> Result<(), LimitError> {
        self.suspect(start, self.text.len(), what)
    }
}
