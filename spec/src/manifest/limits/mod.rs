//! What a KDL text must satisfy before the `kdl` parser sees it.
//!
//! `kdl`'s parser recurses without a depth limit: once per nested `{`, once per `*`,
//! `/` or run of text inside a block comment, once per slashdash in a chain, and once
//! per syntax error it recovers from at the top of the document. A manifest such as
//! `"zone a {".repeat(100000)` (or a few thousand lines each holding an error) would
//! overflow the stack and abort the process, and PID 1 aborting is a kernel panic.
//!
//! So every text is first scanned here, iteratively, by a small KDL v2 lexer and node
//! grammar. It refuses a text larger than [`MAX_BYTES`], blocks nested deeper than
//! [`MAX_DEPTH`], a block comment with more than [`MAX_COMMENT_PIECES`] pieces, and
//! a text whose syntax errors would cost the parser more than [`MAX_ERROR_BYTES`]
//! bytes of recovery. Strings are read exactly as strictly as `kdl` reads them (see
//! `strings`): a doubt inside one costs the whole rest of the text, since the parser's
//! recovery may read that rest as code. The grammar is stricter than KDL in rare corners; that only
//! spends some of the error budget, and `kdl` then has the last word on what is
//! valid, so small mistakes still get `kdl`'s precise messages.

mod strings;

/// Largest manifest text accepted, in bytes (1 MiB).
pub const MAX_BYTES: usize = 1 << 20;
/// Deepest nesting of `{` blocks accepted (the schema itself needs 3).
pub const MAX_DEPTH: usize = 16;
/// Most pieces (`*`, `/`, nested comments, runs of other text) in one block comment.
pub const MAX_COMMENT_PIECES: usize = 128;
/// Bytes of suspected syntax errors (each counted to the end of its line, plus
/// [`ERROR_SITE_COST`]) beyond which the text is refused without being parsed.
pub const MAX_ERROR_BYTES: usize = 256;
/// What each suspected syntax error adds to the error budget on top of its bytes.
const ERROR_SITE_COST: usize = 16;

/// Why a text was refused before parsing, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct LimitError {
    /// Byte offset of the offending place.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in characters.
    pub col: usize,
    /// What limit was crossed, in words.
    pub message: String,
}

/// Checks `text` against the limits above, without recursion and without `kdl`.
pub fn check(text: &str) -> Result<(), LimitError> {
    if text.len() > MAX_BYTES {
        let mut at = MAX_BYTES;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        return Err(refuse(
            text,
            at,
            format!("the text goes on past the {MAX_BYTES} bytes (1 MiB) a manifest may hold"),
        ));
    }
    let mut scan = Scanner {
        text,
        pos: 0,
        depth: 0,
        state: State::NodeStart,
        first_error: None,
        error_bytes: 0,
    };
    scan.run()
}

fn refuse(text: &str, offset: usize, message: String) -> LimitError {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    LimitError {
        offset,
        line,
        col,
        message,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Spaces, block comments, `\` line continuations.
    Space,
    /// Newlines and single-line comments.
    Newline,
    Semi,
    Open,
    Close,
    LParen,
    RParen,
    Equals,
    Slashdash,
    /// A bare identifier, quoted or raw string: may name a node or a property.
    Str,
    /// A number or a `#keyword`: only a value.
    Value,
    /// Something KDL does not allow here (`[`, a lone `/`, a control character...).
    Bad,
}

/// Where in a node the grammar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a node.
    NodeStart,
    /// After `/-` announcing a node.
    SlashdashNode,
    /// Inside `(`, before the type name; `node` says whether a node name follows.
    TypeName { node: bool },
    /// After the type name, before `)`.
    TypeClose { node: bool },
    /// After `(type)` of a node, before its name.
    NodeName,
    /// After a node name or an entry: more entries, children or a terminator.
    Entries,
    /// After a string that may be a property key.
    MaybeKey,
    /// After `=` or a value's `(type)`: a value must come.
    ExpectValue,
    /// After `/-` inside a node: an entry or children must come.
    SlashdashEntry,
    /// After a node's children block: only slashdashed children or a terminator.
    AfterChildren,
    /// After `/-` following children: another children block must come.
    SlashdashChildren,
    /// Recovering from a syntax error: skipping to the end of the line.
    Skip,
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    state: State,
    /// Offset and message of the first suspected syntax error.
    first_error: Option<(usize, String)>,
    error_bytes: usize,
}

impl Scanner<'_> {
    fn run(&mut self) -> Result<(), LimitError> {
        if self.text.starts_with('\u{feff}') {
            self.pos = '\u{feff}'.len_utf8();
        }
        while self.pos < self.text.len() {
            let start = self.pos;
            let token = self.token()?;
            if matches!(token, Token::Str | Token::Value) && !self.at_value_end() {
                // The parser's recovery would run on through quotes and `#`s.
                self.suspect_line(self.pos, "KDL wants a space after a value")?;
            }
            self.grammar(start, token)?;
        }
        Ok(())
    }

    /// Whether what follows ends a value for the parser (`value_terminator`).
    fn at_value_end(&self) -> bool {
        let rest = self.rest();
        match rest.chars().next() {
            None => true,
            Some(c) if is_space(c) || is_newline(c) => true,
            Some(';' | '=' | ')' | '{' | '}' | '\\') => true,
            Some('/') => rest.starts_with("//") || rest.starts_with("/*"),
            Some(_) => false,
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Records a suspected syntax error at `at`, whose recovery may cost the parser
    /// up to `end`; refuses the text once their cost passes the budget.
    fn suspect(&mut self, at: usize, end: usize, what: &str) -> Result<(), LimitError> {
        self.error_bytes += end.saturating_sub(at) + ERROR_SITE_COST;
        if self.first_error.is_none() {
            self.first_error = Some((at, what.to_owned()));
        }
        if self.error_bytes > MAX_ERROR_BYTES {
            let (first, what) = self.first_error.clone().unwrap_or((at, what.to_owned()));
            return Err(refuse(
                self.text,
                first,
                format!(
                    "{what}; the text has too many syntax errors to be parsed safely \
                     (more than {MAX_ERROR_BYTES} bytes of them)"
                ),
            ));
        }
        self.state = State::Skip;
        Ok(())
    }

    fn token(&mut self) -> Result<Token, LimitError> {
        let start = self.pos;
        let c = self.bump().expect("called before the end");
        let next = self.peek();
        Ok(match c {
            _ if is_newline(c) => Token::Newline,
            _ if is_space(c) => Token::Space,
            '/' if next == Some('/') => {
                let end = self.rest().find(is_newline).unwrap_or(self.rest().len());
                self.pos += end;
                Token::Newline
            }
            '/' if next == Some('*') => {
                self.pos += 1;
                self.block_comment(start)?;
                Token::Space
            }
            '/' if next == Some('-') => {
                self.pos += 1;
                Token::Slashdash
            }
            '\\' => self.continuation(),
            ';' => Token::Semi,
            '{' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(refuse(
                        self.text,
                        start,
                        format!("blocks are nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                Token::Open
            }
            '}' => {
                if self.depth == 0 {
                    return Ok(Token::Bad);
                }
                self.depth -= 1;
                Token::Close
            }
            '(' => Token::LParen,
            ')' => Token::RParen,
            '=' => Token::Equals,
            '"' => {
                self.quoted(start, 0)?;
                Token::Str
            }
            '#' => {
                let hashes = 1 + self.rest().bytes().take_while(|&b| b == b'#').count();
                if self.text[start + hashes..].starts_with('"') {
                    self.pos = start + hashes + 1;
                    self.quoted(start, hashes)?;
                    Token::Str
                } else {
                    self.word();
                    Token::Value
                }
            }
            _ if is_ident_char(c) => {
                let numeric = c.is_ascii_digit()
                    || (matches!(c, '+' | '-' | '.') && next.is_some_and(|n| n.is_ascii_digit()));
                self.word();
                if numeric {
                    Token::Value
                } else {
                    Token::Str
                }
            }
            _ => Token::Bad,
        })
    }

    fn word(&mut self) {
        let end = self
            .rest()
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(self.rest().len());
        self.pos += end;
    }

    /// `\` continues a node on the next line: spaces, then a newline, a `//` comment
    /// or the end of the text must follow.
    fn continuation(&mut self) -> Token {
        let spaces = self
            .rest()
            .find(|c: char| !is_space(c))
            .unwrap_or(self.rest().len());
        let after = &self.rest()[spaces..];
        let ok = after.is_empty()
            || after.starts_with("//")
            || after.starts_with(is_newline)
            || after.starts_with("/*");
        if !ok {
            return Token::Bad;
        }
        self.pos += spaces;
        if let Some(c) = self.peek().filter(|&c| is_newline(c)) {
            self.pos += c.len_utf8();
        } else if self.rest().starts_with("//") {
            let end = self.rest().find(is_newline).unwrap_or(self.rest().len());
            self.pos += end;
        }
        Token::Space
    }

    /// A block comment (after its `/*`), counting its pieces the way `kdl` recurses
    /// over them. An unterminated one is a syntax error to the end of the text.
    fn block_comment(&mut self, start: usize) -> Result<(), LimitError> {
        let mut nesting = 1usize;
        let mut pieces = 0usize;
        while nesting > 0 {
            let rest = self.rest();
            if rest.is_empty() {
                return self.suspect(start, self.text.len(), "this block comment is never closed");
            }
            pieces += 1;
            if pieces > MAX_COMMENT_PIECES {
                return Err(refuse(
                    self.text,
                    start,
                    format!(
                        "this block comment has more than {MAX_COMMENT_PIECES} pieces \
                         (`*`, `/`, nested comments, text between them); split it"
                    ),
                ));
            }
            if rest.starts_with("*/") {
                nesting -= 1;
                self.pos += 2;
            } else if rest.starts_with("/*") {
                nesting += 1;
                self.pos += 2;
            } else if rest.starts_with(['*', '/']) {
                self.pos += 1;
            } else {
                self.pos += rest.find(['*', '/']).unwrap_or(rest.len());
            }
        }
        Ok(())
    }

    /// The grammar of nodes, one token at a time.
    fn grammar(&mut self, at: usize, token: Token) -> Result<(), LimitError> {
        use State::*;
        use Token::*;
        let next = match (self.state, token) {
            (Skip, Newline | Semi) => NodeStart,
            (Skip, _) => Skip,
            (_, Bad) => return self.suspect_line(at, "KDL does not allow this character here"),
            (NodeStart, Space | Newline | Semi) => NodeStart,
            (NodeStart, Slashdash) => SlashdashNode,
            (SlashdashNode, Space | Newline) => SlashdashNode,
            (NodeStart | SlashdashNode, LParen) => TypeName { node: true },
            (NodeStart | SlashdashNode | NodeName, Str) => Entries,
            (TypeName { node }, Str) => TypeClose { node },
            (TypeClose { node: true }, RParen) => NodeName,
            (TypeClose { node: false }, RParen) => ExpectValue,
            (NodeName | ExpectValue | SlashdashEntry | SlashdashChildren, Space) => self.state,
            (Entries | MaybeKey | AfterChildren, Space) => self.state,
            (Entries | MaybeKey | AfterChildren, Newline | Semi) => NodeStart,
            (NodeStart | Entries | MaybeKey | AfterChildren, Close) => AfterChildren,
            (Entries | MaybeKey | SlashdashEntry | SlashdashChildren, Open) => NodeStart,
            (Entries | MaybeKey, Slashdash) => SlashdashEntry,
            (AfterChildren, Slashdash) => SlashdashChildren,
            (Entries | MaybeKey | SlashdashEntry | ExpectValue, LParen) => TypeName { node: false },
            (Entries | MaybeKey | SlashdashEntry, Str) => MaybeKey,
            (Entries | MaybeKey | SlashdashEntry | ExpectValue, Value) => Entries,
            (ExpectValue, Str) => Entries,
            (MaybeKey, Equals) => ExpectValue,
            _ => return self.suspect_line(at, "KDL does not expect this here"),
        };
        self.state = next;
        Ok(())
    }

    /// A syntax error that the parser recovers from by the end of its line, unless a
    /// block comment or multi-line string could start there: then (reading the line
    /// its own way) it may go on for many lines.
    fn suspect_line(&mut self, at: usize, what: &str) -> Result<(), LimitError> {
        let line_end = self.text[at..]
            .find(is_newline)
            .map_or(self.text.len(), |i| at + i);
        let line = &self.text[at..line_end];
        let end = if line.contains("/*") || line.contains("\"\"\"") {
            self.text.len()
        } else {
            line_end
        };
        self.suspect(at, end, what)
    }
}

fn is_newline(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{85}' | '\u{0b}' | '\u{0c}' | '\u{2028}' | '\u{2029}'
    )
}

fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Characters of a bare identifier or number (KDL v2: anything but these, spaces,
/// newlines and control characters).
fn is_ident_char(c: char) -> bool {
    !(c.is_control()
        || is_space(c)
        || is_newline(c)
        || matches!(
            c,
            '\\' | '/' | '(' | ')' | '{' | '}' | ';' | '[' | ']' | '"' | '#' | '='
        )
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'))
}

#[cfg(test)]
mod tests;
