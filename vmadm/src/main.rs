//! vmadm: the operator CLI. All logic lives in the library.

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(vmadm::commands::run(std::env::args_os().collect()));
}
