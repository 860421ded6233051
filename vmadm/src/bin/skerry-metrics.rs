//! skerry-metrics: the node's Prometheus endpoint. init starts it (and restarts it)
//! when node.kdl says `metrics listen="ADDR:PORT"`; it asks init for usage over the
//! system bus, like vmadm.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmadm::metrics::server::{self, Collector, Limits};

/// One line per second per call site at most, after a burst of 5: a scraper every
/// 100 ms against a dead init must not fill the console.
static LIMITER: Mutex<host::log::RateLimiter> =
    Mutex::new(host::log::RateLimiter::new(5, Duration::from_secs(1)));

const USAGE: &str = "usage: skerry-metrics --listen ADDR:PORT [--exit-with-parent]";

/// Exits once the process that started us (init) is gone: a restarted init starts
/// its own server, which must find the port free. Polled, since PR_SET_PDEATHSIG
/// follows the parent *thread*, and init's threads come and go.
async fn exit_when_orphaned() {
    let parent = nix::unistd::getppid();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if nix::unistd::getppid() != parent {
            log::info!("init ({parent}) is gone; exiting");
            std::process::exit(0);
        }
    }
}

fn main() {
    host::log::Logger::new("skerry-metrics")
        .rate_limited(&LIMITER)
        .install();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let exit_with_parent = args.iter().any(|a| a == "--exit-with-parent");
    args.retain(|a| a != "--exit-with-parent");
    let addr: SocketAddr = match args.as_slice() {
        [flag, addr] if flag == "--listen" => match addr.parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("skerry-metrics: --listen {addr:?}: {e} (expected ADDR:PORT)\n{USAGE}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skerry-metrics: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skerry-metrics: cannot listen on {addr}: {e}");
                return 1;
            }
        };
        log::info!("serving http://{addr}/metrics");
        if exit_with_parent {
            tokio::spawn(exit_when_orphaned());
        }
        let collector = Arc::new(Collector::new(Limits::default()));
        match server::serve(listener, collector).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("skerry-metrics: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}
