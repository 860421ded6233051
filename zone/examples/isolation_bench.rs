//! Benchmark of tenant isolation (run by zone/bench/isolation, as root):
//!
//! 1. TCP throughput (iperf3) and round-trip latency (ping) between two network
//!    namespaces plugged by the zone runtime's nic code on one bridge, with antispoof
//!    on both ports and a 20-rule firewall on the server, against the same two ports
//!    with their rules removed; rounds interleaved, medians and ratios printed.
//! 2. The time to install one instance port's rules (antispoof + a 20-rule firewall)
//!    on an empty node and with 500 ports already installed.

use host::isolation::{self, PortPolicy};
use spec::{Firewall, FirewallProto, FirewallRule, IpConfig, Nic, NicAllow};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zone::net::NicPlan;

const ROUNDS: usize = 3;
const PORTS_PRESENT: usize = 500;
const INSTALLS: usize = 15;

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    let id = std::process::id() & 0xffff;
    let tag = format!("ib{id:04x}");
    let bridge = monitor::default_bridge_name(&tag);
    let (server, client) = (Netns::new(), Netns::new());
    let fw = firewall_of_20();
    let sp = NicPlan::new(
        &uuid(id, 1),
        0,
        &nic(&tag, "10.237.0.1/24"),
        bridge.clone(),
        Some(fw),
    );
    let cp = NicPlan::new(
        &uuid(id, 2),
        0,
        &nic(&tag, "10.237.0.2/24"),
        bridge.clone(),
        None,
    );
    server.plug(&sp);
    client.plug(&cp);
    let mut filtered = vec![];
    let mut open = vec![];
    for _ in 0..ROUNDS {
        isolation::install(&sp.policy()).unwrap();
        isolation::install(&cp.policy()).unwrap();
        filtered.push(measure(&server, &client));
        isolation::remove(&sp.host_if).unwrap();
        isolation::remove(&cp.host_if).unwrap();
        open.push(measure(&server, &client));
    }
    zone::net::teardown(&[sp, cp]);
    drop((server, client));
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    let (fg, fl) = medians(&filtered);
    let (og, ol) = medians(&open);
    println!("throughput, TCP (iperf3, median of {ROUNDS}):");
    println!("  antispoof + 20-rule firewall  {fg:8.2} Gbit/s");
    println!("  no filtering                  {og:8.2} Gbit/s");
    println!("  filtered / unfiltered         {:8.3}", fg / og);
    println!("round trip (ping, median of {ROUNDS} runs of 300):");
    println!("  antispoof + 20-rule firewall  {fl:8.1} us");
    println!("  no filtering                  {ol:8.1} us");
    println!("  filtered / unfiltered         {:8.3}", fl / ol);

    let empty = install_times(id, "e");
    let names: Vec<String> = (0..PORTS_PRESENT)
        .map(|i| format!("skf{:04x}{i:04x}n0", id))
        .collect();
    for name in &names {
        isolation::install(&policy(name)).unwrap();
    }
    let full = install_times(id, "f");
    for name in &names {
        isolation::remove(name).unwrap();
    }
    println!("installing one port's rules (median of {INSTALLS}):");
    println!("  on an empty node              {:8.2} ms", ms(empty));
    println!(
        "  with {PORTS_PRESENT} ports installed      {:8.2} ms",
        ms(full)
    );
    println!(
        "  {PORTS_PRESENT} ports / empty               {:8.3}",
        ms(full) / ms(empty)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median time to install (then remove, untimed) a fresh port's rules.
fn install_times(id: u32, kind: &str) -> Duration {
    let mut times: Vec<Duration> = (0..INSTALLS)
        .map(|i| {
            let name = format!("sk{kind}{id:04x}{i:03x}n0");
            let p = policy(&name);
            let t = Instant::now();
            isolation::install(&p).unwrap();
            let took = t.elapsed();
            isolation::remove(&name).unwrap();
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn policy(port: &str) -> PortPolicy {
    let mac = spec::MacAddr::derived(port).octets();
    PortPolicy::for_nic(
        port,
        mac,
        &nic("x", "10.238.0.9/24"),
        Some(&firewall_of_20()),
    )
}

/// 18 rules that match nothing of the benchmark's traffic, then the two that let it
/// in: every packet walks all 20.
fn firewall_of_20() -> Firewall {
    let mut rules: Vec<FirewallRule> = (0..18)
        .map(|i| FirewallRule {
            proto: if i % 2 == 0 {
                FirewallProto::Tcp
            } else {
                FirewallProto::Udp
            },
            ports: Some((1000 + i * 10, 1005 + i * 10)),
            from: Some((format!("10.{}.0.0", 100 + i).parse().unwrap(), 16)),
        })
        .collect();
    rules.push(FirewallRule {
        proto: FirewallProto::Tcp,
        ports: Some((5201, 5201)),
        from: Some(("10.237.0.0".parse().unwrap(), 24)),
    });
    rules.push(FirewallRule {
        proto: FirewallProto::Icmp,
        ports: None,
        from: None,
    });
    Firewall { rules }
}

/// (Gbit/s, round trip in us) of one iperf3 run and one ping run.
fn measure(server: &Netns, client: &Netns) -> (f64, f64) {
    let mut iperf = server
        .cmd("iperf3", &["-s", "-1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .cmd("iperf3", &["-c", "10.237.0.1", "-t", "4", "-J"])
        .output()
        .unwrap();
    let _ = iperf.wait();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3: {}", String::from_utf8_lossy(&out.stdout)));
    let ping = client
        .cmd("ping", &["-q", "-c", "300", "-i", "0.002", "10.237.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    // rtt min/avg/max/mdev = 0.031/0.045/0.120/0.010 ms
    let avg: f64 = text
        .lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("ping: {text}"));
    (bps / 1e9, avg * 1e3)
}

fn medians(runs: &[(f64, f64)]) -> (f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    )
}

fn uuid(id: u32, n: u32) -> String {
    format!("{:08x}-0000-4000-8000-000000000000", id << 8 | n)
}

fn nic(tag: &str, ip: &str) -> Nic {
    let (addr, prefix) = spec::format::parse_cidr(ip).unwrap();
    Nic {
        name: "net0".into(),
        tag: tag.into(),
        ip: IpConfig::Static { addr, prefix },
        gateway: None,
        mtu: None,
        mac: None,
        vlan: 0,
        allow: NicAllow::default(),
    }
}

/// A network namespace held by a sleeping process.
struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        Netns(child)
    }

    fn plug(&self, plan: &NicPlan) {
        zone::net::setup(self.0.id() as i32, std::slice::from_ref(plan)).unwrap();
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.0.id()))
            .arg(program)
            .args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
