//! vmadm: the operator CLI. (This minimal entry point dispatches `validate`; the
//! D-Bus client commands live beside it.)

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match args.first().and_then(|a| a.to_str()) {
        Some("validate") => vmadm::validate::run(&args[1..]),
        _ => {
            eprintln!("usage: vmadm validate [-f FILE | FILE | DIR]...");
            2
        }
    };
    std::process::exit(code);
}
