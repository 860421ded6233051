//! `mdata-list`: mdata-client's tool of that name (see mdata/README.md).

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(mdata::cli::run(
        mdata::cli::Command::List,
        std::env::args_os(),
    ));
}
