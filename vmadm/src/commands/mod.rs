//! Running a parsed command line: one module per family of commands.
//!
//! Every command writes its data to stdout and its status messages ("Successfully ...")
//! and errors to stderr, as SmartOS's vmadm does, and maps to an exit code: 0 success,
//! 1 error, 2 usage.

mod events;
mod instance;
mod list;
mod stats;

use crate::cli::{Cli, Command};
use crate::client::{ClientError, Node};
use crate::console::{self, ConsoleError, Detach};
use crate::filter::FilterError;
use crate::payload::PayloadError;
use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: the command failed.
pub const EXIT_ERROR: i32 = 1;
/// Exit status: the command line is wrong.
pub const EXIT_USAGE: i32 = 2;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum VmadmError {
    /// init said no, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A bad filter, sort key or field name.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// A bad property argument or update payload.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The console attach failed.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// An input file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// init refused or failed an update: SmartOS's words, with init's reason (every
    /// bad key and value, or why the running instance cannot take the change).
    #[error("Failed to update VM {id}: {reason}")]
    UpdateFailed {
        /// The name or UUID given.
        id: String,
        /// init's message.
        reason: String,
    },
    /// `lookup -1` did not match exactly one instance.
    #[error("lookup -1: {0} instances matched, expected exactly one")]
    NotExactlyOne(usize),
    /// Reconcile applied what it could, but some manifests are unusable or some steps
    /// failed or were refused.
    #[error("reconcile: {0} problem(s), listed above; the rest was applied")]
    ReconcileProblems(usize),
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl VmadmError {
    /// The exit status this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmadmError::Filter(_) | VmadmError::Payload(PayloadError::Property(_)) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }
}

/// Result of a command.
pub type Result<T> = std::result::Result<T, VmadmError>;

/// Runs vmadm with its whole argument vector (program name first); returns the exit
/// status. `vmadm validate ...` goes to [`crate::validate::run`] with the remaining
/// arguments untouched, so SmartOS forms like `validate create -f F` reach it as typed.
pub fn run(args: Vec<OsString>) -> i32 {
    if args.get(1).is_some_and(|a| a == "validate") {
        return crate::validate::run(&args[2..]);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" with exit code 0 in clap.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let command = match cli.command {
        // Reached when options came first (`vmadm --color x validate`): still untouched.
        Command::Validate { args } => return crate::validate::run(&args),
        command => command,
    };
    match execute(command) {
        Ok(()) => EXIT_OK,
        Err(VmadmError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(e) => {
            eprintln!("vmadm: {e}");
            e.exit_code()
        }
    }
}

/// What is left to do once the bus conversation is over.
enum After {
    Nothing,
    /// Attach to this console. Done on the main thread after the runtime is gone, so
    /// that blocking the terminating signals covers every thread of the process.
    Attach {
        name: String,
        fd: OwnedFd,
    },
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "vmadm", &mut io::stdout().lock());
            Ok(())
        }
        Command::Man => {
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            Ok(())
        }
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(VmadmError::Runtime)?;
            let after = runtime.block_on(talk(command))?;
            drop(runtime);
            match after {
                After::Nothing => Ok(()),
                After::Attach { name, fd } => attach(&name, fd),
            }
        }
    }
}

/// The connection to init, made on first use, so that a command checks its own
/// arguments (filters, fields, properties) before the bus is touched.
pub(crate) struct Init(tokio::sync::OnceCell<Node>);

impl Init {
    /// Connects on the first call.
    async fn node(&self) -> Result<&Node> {
        Ok(self.0.get_or_try_init(Node::connect).await?)
    }
}

/// The commands that talk to init.
async fn talk(command: Command) -> Result<After> {
    let init = Init(tokio::sync::OnceCell::new());
    let result = dispatch(&init, command).await;
    match (result, init.0.get()) {
        // A NotFound gets its "did you mean" here, where the connection is at hand.
        (Err(VmadmError::Client(e)), Some(node)) => Err(node.with_suggestion(e).await.into()),
        (other, _) => other,
    }
}

async fn dispatch(init: &Init, command: Command) -> Result<After> {
    match command {
        Command::List {
            table,
            sort,
            filters,
        } => list::list(init, &table, &sort, &filters).await?,
        Command::Lookup {
            json,
            one,
            fields,
            filters,
        } => list::lookup(init, json, one, &fields, &filters).await?,
        Command::Reconcile { table } => list::reconcile(init, &table).await?,
        Command::Get { id } => {
            let detail = init.node().await?.get(&id).await?;
            // Printed through a JSON value: the same sorted keys init's text gives.
            print_json(&serde_json::to_value(detail).map_err(io::Error::from)?)?
        }
        Command::Info { id } => stats::info(init, &id).await?,
        Command::Stats {
            table,
            interval,
            id,
        } => {
            let interval = std::time::Duration::from_secs_f64(interval);
            stats::stats(init, &table, interval, id.as_deref()).await?
        }
        Command::Timeline { table } => stats::timeline(init, &table).await?,
        Command::Create { file } => instance::create(init, file.as_deref()).await?,
        Command::Update {
            id,
            file,
            properties,
        } => instance::update(init, &id, file.as_deref(), &properties).await?,
        Command::Delete { id } => {
            init.node().await?.delete(&id).await?;
            status(&format!("Successfully deleted VM {id}"));
        }
        Command::Start { id } => {
            init.node().await?.start(&id).await?;
            status(&format!("Successfully started VM {id}"));
        }
        Command::Stop { id, force, timeout } => {
            // 0 asks for init's own grace period.
            let timeout = timeout.unwrap_or(0);
            init.node().await?.stop(&id, force, timeout).await?;
            status(&format!("Successfully completed stop for VM {id}"));
        }
        Command::Reboot { id, force } => {
            init.node().await?.reboot(&id, force).await?;
            status(&format!("Successfully completed reboot for VM {id}"));
        }
        Command::Events {
            full,
            json,
            ready,
            id,
        } => events::stream(init.node().await?, full, json, ready, id.as_deref()).await?,
        Command::Console { id } => {
            let fd = init.node().await?.console(&id).await?;
            return Ok(After::Attach { name: id, fd });
        }
        Command::Validate { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled without the bus")
        }
    }
    Ok(After::Nothing)
}

fn attach(name: &str, fd: OwnedFd) -> Result<()> {
    eprintln!("vmadm: connected to the console of {name}; Ctrl-] detaches");
    let how = console::attach(fd.as_fd(), io::stdin().as_fd(), io::stdout().as_fd())?;
    let why = match how {
        Detach::Escape => "detached".to_string(),
        Detach::InputClosed => "input closed; detached".to_string(),
        Detach::ConsoleClosed => "the console closed (instance stopped?)".to_string(),
        Detach::Signal(sig) => format!("{sig}; detached"),
    };
    // The terminal is cooked again here, but the instance's output may have left the
    // cursor mid-line.
    eprintln!("\r\nvmadm: {why} from {name}");
    Ok(())
}

/// A status line on stderr.
fn status(line: &str) {
    eprintln!("{line}");
}

/// Pretty JSON on stdout.
fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Text on stdout.
fn print(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
