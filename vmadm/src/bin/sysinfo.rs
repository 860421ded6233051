//! sysinfo: the node's identity and hardware as JSON (SmartOS's `sysinfo` keys).

#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [h] if h == "-h" || h == "--help" => {
            println!("usage: sysinfo\nPrints this node's identity and hardware as JSON.");
            return;
        }
        other => {
            eprintln!(
                "sysinfo: unexpected argument '{}'\nusage: sysinfo",
                other[0]
            );
            std::process::exit(2);
        }
    }
    let v = vmadm::node_info::sysinfo();
    match serde_json::to_string_pretty(&v) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("sysinfo: {e}");
            std::process::exit(1);
        }
    }
}
