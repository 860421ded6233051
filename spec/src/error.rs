//! Manifest errors: every problem of a file, each with its FILE:LINE:COL and span.
//!
//! A [`ManifestError`] holds all the problems found in one file (parsing goes on after
//! the first one, so an operator fixes a file in one pass). It renders two ways: plain
//! `FILE:LINE:COL: message` lines for logs and pipes, or miette's graphical report with
//! the span underlined for a terminal.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem in a manifest, at a position of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; 0 when the problem concerns the whole file (it could not be read).
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Byte span in the source text (offset, length).
    pub span: SourceSpan,
    /// What is wrong, in words.
    pub message: String,
    /// Short text under the underlined span.
    pub label: Option<String>,
    /// How to fix it, when we can tell (e.g. "did you mean `memory`?").
    pub help: Option<String>,
}

/// Every problem found in one manifest file (or payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file the problems are in (`<stdin>` and the like for other sources).
    pub file: PathBuf,
    /// The problems, in source order.
    pub problems: Vec<Problem>,
    /// The source text, for rendering spans; `None` when the file could not be read.
    text: Option<Arc<String>>,
}

impl ManifestError {
    /// An error for a file that could not be read at all.
    pub fn unreadable(file: &Path, err: &std::io::Error) -> Self {
        ManifestError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                col: 0,
                span: SourceSpan::from(0..0),
                message: format!("cannot read: {err}"),
                label: None,
                help: None,
            }],
            text: None,
        }
    }

    /// The source text the spans point into, if the file was read.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref().map(String::as_str)
    }

    /// Plain `FILE:LINE:COL: message` lines (with ` (help: ...)` appended when there is
    /// a hint), one per problem, newline-terminated.
    pub fn render_plain(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&plain_line(&self.file, p));
            out.push('\n');
        }
        out
    }

    /// miette's graphical report: each problem with its span underlined. `color`
    /// picks ANSI colors (for a terminal) or plain Unicode art.
    pub fn render_graphical(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme);
        let src = self.named_source();
        let mut out = String::new();
        for p in &self.problems {
            let report = ProblemReport {
                err: self,
                src: src.as_ref(),
                problem: p,
            };
            // Rendering into a String cannot fail; if miette ever did, the plain line
            // still tells the operator everything.
            if handler.render_report(&mut out, &report).is_err() {
                out.push_str(&plain_line(&self.file, p));
                out.push('\n');
            }
        }
        out
    }

    /// The source text named after the file, for callers that build their own miette
    /// reports; `None` when the file could not be read.
    pub fn named_source(&self) -> Option<NamedSource<Arc<String>>> {
        self.text
            .as_ref()
            .map(|t| NamedSource::new(self.file.display().to_string(), Arc::clone(t)))
    }
}

fn plain_line(file: &Path, p: &Problem) -> String {
    let mut line = if p.line == 0 {
        format!("{}: {}", file.display(), p.message)
    } else {
        format!("{}:{}:{}: {}", file.display(), p.line, p.col, p.message)
    };
    if let Some(help) = &p.help {
        line.push_str(&format!(" (help: {help})"));
    }
    line
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.render_plain();
        f.write_str(plain.trim_end())
    }
}

impl std::error::Error for ManifestError {}

impl Diagnostic for ManifestError {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.text.as_ref().map(|t| t as &dyn miette::SourceCode)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.line == 0 {
            return None;
        }
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_with_span(self.label.clone(), self.span),
        )))
    }
}

/// One problem rendered on its own, with the file's name and text attached.
struct ProblemReport<'a> {
    err: &'a ManifestError,
    src: Option<&'a NamedSource<Arc<String>>>,
    problem: &'a Problem,
}

impl fmt::Debug for ProblemReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.problem, f)
    }
}

impl fmt::Display for ProblemReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // With a source, miette's header already names FILE:LINE:COL.
        if self.src.is_some() && self.problem.line != 0 {
            f.write_str(&self.problem.message)
        } else {
            write!(f, "{}: {}", self.err.file.display(), self.problem.message)
        }
    }
}

impl std::error::Error for ProblemReport<'_> {}

impl Diagnostic for ProblemReport<'_> {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem.help()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.problem.labels()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src.map(|s| s as &dyn miette::SourceCode)
    }
}

/// Collects the problems of one source text, turning byte spans into line:col.
#[derive(Debug)]
pub(crate) struct Collector {
    file: PathBuf,
    text: Arc<String>,
    problems: Vec<Problem>,
}

impl Collector {
    pub(crate) fn new(file: &Path, text: Arc<String>) -> Self {
        Collector {
            file: file.to_path_buf(),
            text,
            problems: Vec::new(),
        }
    }

    /// Records a problem at `span`.
    pub(crate) fn push(&mut self, span: SourceSpan, message: impl Into<String>) -> &mut Problem {
        let (line, col, span) = locate(&self.text, span);
        self.problems.push(Problem {
            line,
            col,
            span,
            message: message.into(),
            label: None,
            help: None,
        });
        self.problems.last_mut().expect("just pushed")
    }

    /// `file:line:col` of a span, for messages that point at a second place.
    pub(crate) fn place(&self, span: SourceSpan) -> String {
        let (line, col, _) = locate(&self.text, span);
        format!("{}:{line}:{col}", self.file.display())
    }

    /// 1-based line and column of a span.
    pub(crate) fn line_col(&self, span: SourceSpan) -> (usize, usize) {
        let (line, col, _) = locate(&self.text, span);
        (line, col)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The error holding every problem recorded, in source order.
    pub(crate) fn into_error(mut self) -> ManifestError {
        self.problems.sort_by_key(|p| (p.line, p.col));
        ManifestError {
            file: self.file,
            problems: self.problems,
            text: Some(self.text),
        }
    }
}

/// Clamps a span into the text (on char boundaries) and finds its 1-based line:col.
fn locate(text: &str, span: SourceSpan) -> (usize, usize, SourceSpan) {
    let mut start = span.offset().min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = start.saturating_add(span.len()).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..start].chars().count() + 1;
    (line, col, SourceSpan::from(start..end))
}
