//! `vmadm validate`: checks manifests and SmartOS payloads offline.
//!
//! ```text
//! vmadm validate [-f FILE | FILE | DIR]...     KDL manifests (or JSON create payloads)
//! vmadm validate create [-f FILE]              a SmartOS create payload
//! vmadm validate update BRAND [-f FILE]        a SmartOS update payload for BRAND
//! ```
//!
//! Standard input is read when no file is given (or for `-`). KDL and JSON are told
//! apart by content. Exit status: 0 valid, 1 invalid, 2 usage error.

use spec::smartos::{self, Action, SmartosErrors};
use spec::ManifestError;
use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Exit status: everything is valid.
pub const VALID: i32 = 0;
/// Exit status: something is invalid (or unreadable).
pub const INVALID: i32 = 1;
/// Exit status: the command line is wrong.
pub const USAGE: i32 = 2;

const HELP: &str = "\
usage: vmadm validate [-f FILE | FILE | DIR]...
       vmadm validate create [-f FILE]
       vmadm validate update BRAND [-f FILE]

Checks KDL manifests (every *.kdl of a DIR, names unique across all files) or SmartOS
JSON payloads, offline. Reads standard input when no file is given, or for `-`.
Exit status: 0 valid, 1 invalid, 2 usage error.";

/// What to check.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Manifests (or create payloads, by content), from these inputs.
    Files(Vec<PathBuf>),
    /// `create [-f FILE]`.
    Create(Option<PathBuf>),
    /// `update BRAND [-f FILE]`.
    Update(String, Option<PathBuf>),
    /// `-h` / `--help`.
    Help,
}

/// Runs `vmadm validate` with the arguments after the word `validate`; returns the
/// exit status (0 valid, 1 invalid, 2 usage), having printed the results.
pub fn run(args: &[OsString]) -> i32 {
    let mode = match parse_args(args) {
        Ok(mode) => mode,
        Err(why) => {
            eprintln!("vmadm validate: {why}\n\n{HELP}");
            return USAGE;
        }
    };
    let out = &mut std::io::stdout().lock();
    let err = &mut std::io::stderr().lock();
    let style = Style::detect();
    let status = match mode {
        Mode::Help => {
            let _ = writeln!(out, "{HELP}");
            VALID
        }
        Mode::Files(files) => check_files(&files, style, out, err),
        Mode::Create(file) => check_payload(Action::Create, None, file.as_deref(), style, out, err),
        Mode::Update(brand, file) => check_payload(
            Action::Update,
            Some(&brand),
            file.as_deref(),
            style,
            out,
            err,
        ),
    };
    let _ = out.flush();
    status
}

/// Arguments `vmadm validate` cannot make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UsageError {
    /// `update` without a brand.
    #[error("`update` needs the instance's brand: vmadm validate update BRAND -f FILE")]
    NoBrand,
    /// `-f` last.
    #[error("-f needs a file name")]
    NoFileName,
    /// A flag we do not have.
    #[error("unknown option `{0}`")]
    UnknownOption(String),
    /// More than one file for create/update.
    #[error("expected at most `-f FILE`, got `{0}`")]
    TooManyArguments(String),
}

fn parse_args(args: &[OsString]) -> Result<Mode, UsageError> {
    let mut it = args.iter().peekable();
    let first = it.peek().map(|a| a.to_string_lossy().into_owned());
    match first.as_deref() {
        Some("-h" | "--help" | "help") => return Ok(Mode::Help),
        Some("create") => {
            it.next();
            return one_file(it.cloned().collect()).map(Mode::Create);
        }
        Some("update") => {
            it.next();
            let brand = it
                .next()
                .map(|b| b.to_string_lossy().into_owned())
                .filter(|b| !b.starts_with('-'))
                .ok_or(UsageError::NoBrand)?;
            return one_file(it.cloned().collect()).map(|f| Mode::Update(brand, f));
        }
        _ => {}
    }
    let mut files = Vec::new();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-f" | "--file") => {
                let f = it.next().ok_or(UsageError::NoFileName)?;
                files.push(PathBuf::from(f));
            }
            Some("-h" | "--help") => return Ok(Mode::Help),
            Some(flag) if flag.starts_with('-') && flag != "-" => {
                return Err(UsageError::UnknownOption(flag.to_string()))
            }
            _ => files.push(PathBuf::from(arg)),
        }
    }
    Ok(Mode::Files(files))
}

/// `[-f FILE]` (or a bare FILE) of the SmartOS forms.
fn one_file(args: Vec<OsString>) -> Result<Option<PathBuf>, UsageError> {
    match args
        .iter()
        .map(|a| a.to_str())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Ok(None),
        [Some("-f" | "--file")] => Err(UsageError::NoFileName),
        [Some("-f" | "--file"), _] => Ok(Some(PathBuf::from(&args[1]))),
        [Some(f)] if !f.starts_with('-') || *f == "-" => Ok(Some(PathBuf::from(&args[0]))),
        _ => Err(UsageError::TooManyArguments(
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        )),
    }
}

/// How errors are shown: miette's graphical report on a terminal, plain lines
/// otherwise.
#[derive(Debug, Clone, Copy)]
struct Style {
    graphical: bool,
    color: bool,
}

impl Style {
    fn detect() -> Self {
        let tty = std::io::stderr().is_terminal();
        Style {
            graphical: tty,
            color: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn render(self, e: &ManifestError) -> String {
        if self.graphical {
            e.render_graphical(self.color)
        } else {
            e.render_plain()
        }
    }
}

/// One input: its name for messages and its text.
struct Input {
    name: PathBuf,
    text: String,
    /// Read from a real path (so `load_files` can read it again with the others).
    on_disk: bool,
}

/// Reads `path` (`-` or `None` = standard input).
fn read_input(path: Option<&Path>) -> Result<Input, ManifestError> {
    match path {
        None => read_stdin(),
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(p) => std::fs::read_to_string(p)
            .map(|text| Input {
                name: p.to_path_buf(),
                text,
                on_disk: true,
            })
            .map_err(|e| ManifestError::unreadable(p, &e)),
    }
}

fn read_stdin() -> Result<Input, ManifestError> {
    let name = PathBuf::from("<stdin>");
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| ManifestError::unreadable(&name, &e))?;
    Ok(Input {
        name,
        text,
        on_disk: false,
    })
}

/// Whether a text is a JSON payload rather than KDL.
fn is_json(text: &str) -> bool {
    spec::Format::sniff(text) == spec::Format::Json
}

fn check_files(files: &[PathBuf], style: Style, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    // Expand directories; read everything once to tell KDL from JSON.
    let mut inputs: Vec<Result<Input, ManifestError>> = Vec::new();
    if files.is_empty() {
        inputs.push(read_stdin());
    }
    for f in files {
        if f.is_dir() {
            match spec::manifest::manifest_files(f) {
                Ok(list) if list.is_empty() => {
                    let _ = writeln!(err, "{}: no *.kdl manifests in this directory", f.display());
                    inputs.push(Err(ManifestError::unreadable(
                        f,
                        &std::io::Error::new(std::io::ErrorKind::NotFound, "no *.kdl manifests"),
                    )));
                }
                Ok(list) => inputs.extend(list.iter().map(|p| read_input(Some(p)))),
                Err(e) => inputs.push(Err(ManifestError::unreadable(f, &e))),
            }
        } else {
            inputs.push(read_input(Some(f)));
        }
    }
    let mut status = VALID;
    let mut kdl_files = Vec::new();
    let mut order: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let input = match input {
            Ok(i) => i,
            Err(e) => {
                let _ = write!(err, "{}", style.render(&e));
                status = INVALID;
                continue;
            }
        };
        if is_json(&input.text) {
            status = status.max(report_payload(&input, Action::Create, None, out, err));
        } else if input.on_disk {
            order.push(input.name.clone());
            kdl_files.push(input.name);
        } else {
            status = status.max(report_kdl(&input, style, out, err));
        }
    }
    // KDL files are checked as one set: names must be unique across all of them.
    let loaded = spec::load_files(&kdl_files);
    for file in &order {
        let errors: Vec<&ManifestError> =
            loaded.errors.iter().filter(|e| &e.file == file).collect();
        if errors.is_empty() {
            let n = loaded
                .instances
                .iter()
                .filter(|s| &s.origin.file == file)
                .count();
            let _ = writeln!(out, "{}: valid ({})", file.display(), count(n));
        } else {
            for e in errors {
                let _ = write!(err, "{}", style.render(e));
            }
            status = INVALID;
        }
    }
    status
}

/// Validates one KDL manifest read from stdin or a pipe: `NAME: valid (N instances)`
/// on `out`, or its rendered errors on `err`.
fn report_kdl(input: &Input, style: Style, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match spec::parse_str(&input.name, &input.text) {
        Ok(specs) => {
            let _ = writeln!(
                out,
                "{}: valid ({})",
                input.name.display(),
                count(specs.len())
            );
            VALID
        }
        Err(e) => {
            let _ = write!(err, "{}", style.render(&e));
            INVALID
        }
    }
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 instance".into()
    } else {
        format!("{n} instances")
    }
}

fn check_payload(
    action: Action,
    brand: Option<&str>,
    file: Option<&Path>,
    style: Style,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match read_input(file) {
        Ok(input) if action == Action::Create && !is_json(&input.text) => {
            // `validate create` of a KDL manifest: check it as one.
            report_kdl(&input, style, out, err)
        }
        Ok(input) => report_payload(&input, action, brand, out, err),
        Err(e) => {
            let _ = write!(err, "{}", style.render(&e));
            INVALID
        }
    }
}

/// Validates a SmartOS payload; prints SmartOS's answer (`VALID ...`, or its JSON
/// error object on stdout with one explanation per problem on stderr).
fn report_payload(
    input: &Input,
    action: Action,
    brand: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let result: Result<String, SmartosErrors> = match action {
        Action::Create => smartos::from_payload(&input.text).map(|specs| {
            let brand = serde_brand(&input.text);
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            format!(
                "VALID 'create' payload for {brand} brand VMs ({}).",
                names.join(", ")
            )
        }),
        Action::Update => {
            let brand = brand.unwrap_or("");
            smartos::validate_update(brand, &input.text)
                .map(|()| format!("VALID 'update' payload for {brand} brand VMs."))
        }
    };
    match result {
        Ok(line) => {
            let _ = writeln!(out, "{line}");
            VALID
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json());
            for note in &e.notes {
                let _ = writeln!(err, "{}: {note}", input.name.display());
            }
            INVALID
        }
    }
}

/// The `brand` of a payload already known to be valid.
fn serde_brand(text: &str) -> String {
    text.find("\"brand\"")
        .and_then(|i| {
            let rest = &text[i + 7..];
            let start = rest.find('"')? + 1;
            let end = rest[start..].find('"')?;
            Some(rest[start..start + end].to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(parse_args(&args(&[])), Ok(Mode::Files(vec![])));
        assert_eq!(
            parse_args(&args(&["-f", "a.kdl", "b.kdl", "-"])),
            Ok(Mode::Files(vec![
                "a.kdl".into(),
                "b.kdl".into(),
                "-".into()
            ]))
        );
        assert_eq!(
            parse_args(&args(&["create", "-f", "p.json"])),
            Ok(Mode::Create(Some("p.json".into())))
        );
        assert_eq!(parse_args(&args(&["create"])), Ok(Mode::Create(None)));
        assert_eq!(
            parse_args(&args(&["update", "kvm", "-f", "p.json"])),
            Ok(Mode::Update("kvm".into(), Some("p.json".into())))
        );
        assert!(parse_args(&args(&["update"])).is_err());
        assert!(parse_args(&args(&["update", "-f", "x"])).is_err());
        assert!(parse_args(&args(&["-f"])).is_err());
        assert!(parse_args(&args(&["--frobnicate"])).is_err());
        assert!(parse_args(&args(&["create", "-f", "a", "b"])).is_err());
        assert_eq!(parse_args(&args(&["--help"])), Ok(Mode::Help));
    }

    #[test]
    fn brand_of_a_valid_payload() {
        assert_eq!(serde_brand("{\"brand\": \"kvm\", \"ram\": 1}"), "kvm");
        assert_eq!(serde_brand("{}"), "");
    }
}
