//! `mdata-firstboot [--root DIR] [--dry-run] [--ip PROGRAM]`: configures this guest
//! from its metadata (hostname, root's SSH keys, nics, routes, resolvers) and runs its
//! user-script once per instance. See mdata/README.md.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use mdata::client::Client;
use mdata::firstboot::{self, apply};
use mdata::transport::Endpoint;

const USAGE: &str = "Usage: mdata-firstboot [--root DIR] [--dry-run] [--ip PROGRAM]";

fn main() {
    let mut opts = apply::Options::default();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--root") => opts.root = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            Some("--ip") => {
                opts.ip_program = args.next().map(PathBuf::from).unwrap_or_else(|| usage())
            }
            Some("--dry-run") => opts.dry_run = true,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return;
            }
            _ => usage(),
        }
    }
    let facts = match Client::connect(Endpoint::discover())
        .map_err(firstboot::FirstbootError::from)
        .and_then(|mut c| firstboot::fetch(&mut c))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mdata-firstboot: {e}");
            std::process::exit(2);
        }
    };
    let steps = firstboot::plan(&facts, &apply::links(&opts.root));
    let errors = apply::apply(&steps, &opts, &mut std::io::stdout());
    std::process::exit(if errors.is_empty() { 0 } else { 1 });
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(3);
}
