//! The four commands, with mdata-client's usage lines, messages and exit codes. Each
//! binary is `std::process::exit(cli::run(Command::X, std::env::args_os()))`.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};

use crate::client::{Client, Response, Version};
use crate::transport::Endpoint;

/// mdata-client's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// The request succeeded.
    Success = 0,
    /// The key (or, for mdata-list, any metadata) was not found.
    NotFound = 1,
    /// An error retrying will not fix.
    Error = 2,
    /// Malformed arguments.
    Usage = 3,
}

/// Which tool is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `mdata-get <keyname>`.
    Get,
    /// `mdata-put <keyname> [<value>]` (the value from stdin when not given).
    Put,
    /// `mdata-list`.
    List,
    /// `mdata-delete <keyname>`.
    Delete,
}

impl Command {
    fn verb(self) -> &'static str {
        match self {
            Command::Get => "GET",
            Command::Put => "PUT",
            Command::List => "KEYS",
            Command::Delete => "DELETE",
        }
    }
}

/// Runs one tool with its arguments (program name first) against the discovered
/// endpoint, printing as mdata-client prints; returns the exit code.
pub fn run(cmd: Command, args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = args.first().cloned().unwrap_or_else(|| "mdata".into());
    let prog = std::path::Path::new(&argv0)
        .file_name()
        .map_or(argv0.clone(), |n| n.to_string_lossy().into_owned());
    let usage = match cmd {
        Command::Get | Command::Delete => Some(format!("Usage: {argv0} <keyname>")),
        Command::Put => Some(format!("Usage: {argv0} <keyname> [ <value> ]")),
        Command::List => None,
    };
    if let Some(usage) = usage {
        if args.len() < 2 {
            eprintln!("{prog}: {usage}");
            return ExitCode::Usage as i32;
        }
    }
    let key = args.get(1).cloned().unwrap_or_default();
    // mdata-put reads the value before it talks to the host only once the host is
    // known to support PUT; reading stdin first changes nothing visible and lets an
    // interactive mistake fail fast.
    let value = if cmd == Command::Put {
        match args.get(2) {
            Some(v) => v.clone().into_bytes(),
            None => {
                let mut stdin = std::io::stdin();
                if stdin.is_terminal() {
                    eprintln!(
                        "ERROR: either specify the metadata value as the second command-line argument, or pipe content to stdin."
                    );
                    return ExitCode::Error as i32;
                }
                let mut buf = Vec::new();
                if let Err(e) = stdin.read_to_end(&mut buf) {
                    eprintln!("ERROR: could not read from stdin: {e}");
                    return ExitCode::Error as i32;
                }
                buf
            }
        }
    } else {
        Vec::new()
    };
    let mut client = match Client::connect(Endpoint::discover()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR: could not initialise protocol: {e}");
            return ExitCode::Error as i32;
        }
    };
    if matches!(cmd, Command::Put | Command::Delete) && client.version() == Version::V1 {
        eprintln!("ERROR: host does not support {}", cmd.verb());
        return ExitCode::Error as i32;
    }
    let result = match cmd {
        Command::Get => client.get(&key),
        Command::Put => client.put(&key, &value),
        Command::List => client.keys(),
        Command::Delete => client.delete(&key),
    };
    match result {
        Ok(r) => report(cmd, &key, r),
        Err(e) => {
            eprintln!("ERROR: could not execute {}: {e}", cmd.verb());
            ExitCode::Error as i32
        }
    }
}

/// Prints an answer the way mdata-client's `print_response` does for each tool.
fn report(cmd: Command, key: &str, r: Response) -> i32 {
    let code = match (cmd, r) {
        (Command::Get | Command::List, Response::Success(data)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&data);
            // mdata-get always ends with a newline; mdata-list only when it printed.
            let needs_nl = match cmd {
                Command::Get => data.last() != Some(&b'\n'),
                _ => !data.is_empty() && data.last() != Some(&b'\n'),
            };
            if needs_nl {
                let _ = out.write_all(b"\n");
            }
            if out.flush().is_err() {
                return ExitCode::Error as i32;
            }
            ExitCode::Success
        }
        (_, Response::Success(_)) => ExitCode::Success,
        (Command::List, Response::NotFound) => {
            eprintln!("No metadata");
            ExitCode::NotFound
        }
        (_, Response::NotFound) => {
            eprintln!("No metadata for '{key}'");
            ExitCode::NotFound
        }
        (_, Response::InvalidCommand | Response::V2Ok) => {
            eprintln!("ERROR: host does not support {}", cmd.verb());
            ExitCode::Error
        }
        (_, Response::Unknown(msg)) => {
            match cmd {
                Command::Get => eprintln!("Error getting metadata for key '{key}': {msg}"),
                Command::Put => eprintln!("Error putting metadata for key '{key}': {msg}"),
                Command::Delete => eprintln!("Error deleting metadata key '{key}': {msg}"),
                Command::List => eprintln!("Error getting metadata: {msg}"),
            }
            ExitCode::Error
        }
    };
    code as i32
}
