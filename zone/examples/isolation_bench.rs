//! Benchmark of tenant isolation (run by zone/bench/isolation, as root):
//!
//! 1. TCP throughput (iperf3) and round trips, TCP (sockperf ping-pong) and ICMP
//!    (ping), between two network namespaces plugged by the zone runtime's nic code
//!    on one bridge, with antispoof on both ports and a 20-rule firewall on the
//!    server, against the same two ports (a) with their rules removed (the tables
//!    stay, as on a node with other instances) and (b) with no filtering at all (no
//!    tables, br_netfilter's bridge-nf-call-* off), and, on a kernel whose bridge
//!    family tracks connections itself (the node's: zone/bench/isolation-node) while
//!    br_netfilter is loaded, (c) the same rules with the firewall's conntrack through
//!    br_netfilter, and two kinds that tell what the others' figures can see: (d) a
//!    bridge prerouting hook with no rules (what any filtering costs before its
//!    first rule) and (e) the same hook with 40 rules that match nothing (a cost
//!    that is there: a figure that did not move with it would be measuring
//!    something else; `ISOLATION_BENCH_CALIBRATION_RULE` sets the rule, to price
//!    one before it goes into host::isolation), and (f) the floor of any stateful
//!    nf_tables firewall: conntrack of every frame and one `ct state` rule. Each kind starts from a namespace
//!    without tables. A round runs every kind once, one after the other; a ratio
//!    between two kinds is the median of their ratios in each round (with its
//!    quartiles), so that the machine's drift over a run cancels out. A kind's round trip in a round is the
//!    interquartile mean of its samples (a sockperf message or a ping; ping reports
//!    whole microseconds); its throughput, one iperf3 run. Everything runs in a
//!    network namespace of its own, so the node's own tables are not touched.
//! 2. The time to install one instance port's rules (antispoof + a 20-rule firewall)
//!    on an empty node, with 500 ports already installed, and on the empty node
//!    again (so drift of the machine's load shows), and the time to remove one.
//! 3. `tenants` (asked for by name; zone/tests/isolation_node.rs runs it on the node's
//!    kernel): not a measure but a check that tenants who chose the same addresses
//!    do not share connections, over plain UDP sockets: a flow of one tenant does
//!    not open another's firewall, on another VLAN of the tag or on another tag,
//!    while each firewall still lets in what it allows and the replies to its own
//!    instance's flows, from an instance or from an uplink.

use host::isolation::{self, PortPolicy};
use spec::{Firewall, FirewallProto, FirewallRule, IpConfig, Nic, NicAllow};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zone::net::NicPlan;

/// Throughput rounds (an iperf3 run of each kind).
const ROUNDS: usize = 8;
/// Round-trip rounds (a sockperf run and pings of each kind): short and many, so
/// that each round's kinds see the machine in the same state.
const LATENCY_ROUNDS: usize = 24;
/// Pings per round (each a sample of the round trip).
const PINGS: usize = 100;
/// Seconds of sockperf ping-pong per round (the first 0.4 s are its warm-up).
const SOCKPERF_SECS: &str = "1";
const PORTS_PRESENT: usize = 500;
const INSTALLS: usize = 25;

/// What a round measures.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Antispoof on both ports, the 20-rule firewall on the server.
    Filtered,
    /// The same with the firewall's conntrack through br_netfilter, on a kernel that
    /// has the bridge family's own (the node's): the two designs in one run.
    FilteredBrNetfilter,
    /// The ports' rules removed; the tables and br_netfilter stay.
    Removed,
    /// Antispoof on both ports, no firewall, bridge-nf-call-* off.
    Antispoof,
    /// No tables, bridge-nf-call-* off.
    Nothing,
    /// A bridge prerouting chain without rules: what any nf_tables filtering of the
    /// bridge costs a frame before its first rule.
    EmptyHook,
    /// A chain of rules that match nothing, on every frame: what the benchmark sees
    /// of a cost it knows is there.
    Calibration,
    /// The least any stateful nf_tables firewall costs: every frame connection-tracked
    /// and meeting one rule, `ct state established,related accept`, in a forward hook;
    /// no antispoof, no zones.
    Conntrack,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Filtered => "antispoof + 20-rule firewall",
            Kind::FilteredBrNetfilter => "the same, through br_netfilter",
            Kind::Removed => "rules removed, tables stay",
            Kind::Antispoof => "antispoof only, no firewall",
            Kind::Nothing => "no filtering at all",
            Kind::EmptyHook => "a hook with no rules",
            Kind::Calibration => "calibration: 40 rules a frame",
            Kind::Conntrack => "conntrack and one ct rule",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::Filtered => "filtered",
            Kind::FilteredBrNetfilter => "br_netfilter",
            Kind::Removed => "removed",
            Kind::Antispoof => "antispoof",
            Kind::Nothing => "nothing",
            Kind::EmptyHook => "empty hook",
            Kind::Calibration => "calibration",
            Kind::Conntrack => "conntrack",
        }
    }
}

/// The ratios printed, each where both kinds ran.
const RATIOS: &[(Kind, Kind)] = &[
    (Kind::Filtered, Kind::Removed),
    (Kind::Filtered, Kind::Nothing),
    (Kind::Antispoof, Kind::Nothing),
    (Kind::FilteredBrNetfilter, Kind::Nothing),
    (Kind::EmptyHook, Kind::Nothing),
    (Kind::Calibration, Kind::Nothing),
    (Kind::Conntrack, Kind::Nothing),
    (Kind::Filtered, Kind::Conntrack),
];

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    // The bridge, the ports and the nf_tables tables in a namespace of our own.
    use nix::mount::{mount, MsFlags};
    host::mount::enter_private_mount_ns(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("new network and mount namespaces");
    // sysfs shows the namespace of whoever mounts it: ours, for the bridges' ports.
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting sysfs");
    let id = std::process::id() & 0xffff;
    // `datapath` or `install` runs that part alone; `tenants` is a check, not a
    // measure, and runs only when asked for.
    let part = std::env::args().nth(1).unwrap_or_default();
    if part == "tenants" {
        std::process::exit(if tenants(id) { 0 } else { 1 });
    }
    if part != "install" {
        datapath(id);
    }
    if part != "datapath" {
        install(id);
    }
}

/// Part 1: throughput and round trip.
fn datapath(id: u32) {
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
    let ct = isolation::Conntrack::of_kernel();
    // The comparison needs br_netfilter loaded (not on a node, but here).
    let both = ct == isolation::Conntrack::Bridge
        && std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists();
    println!("conntrack of bridged traffic: {ct:?}");
    println!("calibration rule: {}", calibration_rule());
    let mut kinds = vec![
        Kind::Filtered,
        Kind::Removed,
        Kind::Antispoof,
        Kind::Nothing,
    ];
    if both {
        kinds.push(Kind::FilteredBrNetfilter);
    }
    kinds.extend([Kind::EmptyHook, Kind::Calibration, Kind::Conntrack]);
    let mut sp_antispoof = sp.policy();
    sp_antispoof.firewall = None;
    // Puts the namespace in `kind`'s state, from no tables at all (as the last kind
    // may have left it otherwise).
    let set_up = |kind: Kind| {
        isolation::remove(&sp.host_if).unwrap();
        isolation::remove(&cp.host_if).unwrap();
        no_filtering();
        match kind {
            Kind::Filtered => {
                isolation::install(&sp.policy()).unwrap();
                isolation::install(&cp.policy()).unwrap();
            }
            Kind::FilteredBrNetfilter => {
                let br = isolation::Conntrack::BrNetfilter;
                isolation::install_with(&sp.policy(), br).unwrap();
                isolation::install_with(&cp.policy(), br).unwrap();
            }
            Kind::Removed => {
                isolation::install(&sp.policy()).unwrap();
                isolation::remove(&sp.host_if).unwrap();
                isolation::remove(&cp.host_if).unwrap();
            }
            Kind::Antispoof => {
                isolation::install(&sp_antispoof).unwrap();
                isolation::install(&cp.policy()).unwrap();
            }
            Kind::Nothing => {}
            Kind::EmptyHook => calibration(0),
            Kind::Calibration => calibration(40),
            Kind::Conntrack => conntrack_only(ct),
        }
    };
    let mut samples: Vec<Samples> = kinds.iter().map(|_| Samples::default()).collect();
    // Rounds of every kind, rotating which goes first so none always follows another.
    let mut rounds = |n: usize, measure: &mut dyn FnMut(&mut Samples)| {
        for round in 0..n {
            for k in 0..kinds.len() {
                let at = (round + k) % kinds.len();
                set_up(kinds[at]);
                measure(&mut samples[at]);
            }
        }
    };
    let (throughput_rounds, latency_rounds) = round_counts();
    rounds(throughput_rounds, &mut |into| {
        into.gbits.push(iperf3(&server, &client))
    });
    rounds(latency_rounds, &mut |into| {
        into.tcp_rtt_us.push(sockperf(&server, &client));
        into.rtt_us.push(ping(&client));
    });
    zone::net::teardown(&[sp, cp]);
    drop((server, client));
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    let of = |k: Kind| kinds.iter().position(|x| *x == k).map(|i| &samples[i]);
    // Each ratio whose two kinds ran: the median, and the quartiles, of the two
    // kinds' figures' ratio in each round. A round's kinds ran seconds apart, so the
    // machine's drift over a run (which moves a kind's figures by more than the
    // rules do) cancels out of each ratio.
    let ratios = |per_round: &dyn Fn(&Samples) -> Vec<f64>| {
        for &(a, b) in RATIOS {
            let (Some(a_s), Some(b_s)) = (of(a), of(b)) else {
                continue;
            };
            let r: Vec<f64> = per_round(a_s)
                .iter()
                .zip(per_round(b_s))
                .map(|(x, y)| x / y)
                .collect();
            let (q1, q2, q3) = quartiles(r);
            println!(
                "  {:>12} / {:<8} {q2:7.3}   (quartiles of the rounds' ratios {q1:.3} - {q3:.3})",
                a.short(),
                b.short()
            );
        }
    };
    println!("throughput, TCP (iperf3, 3 s a round, {throughput_rounds} rounds; median):");
    for (k, s) in kinds.iter().zip(&samples) {
        println!("  {:<31} {:8.2} Gbit/s", k.label(), median(s.gbits.clone()));
    }
    ratios(&|s| s.gbits.clone());
    let round_trips = |what: &str, of: &dyn Fn(&Samples) -> &Vec<Vec<f64>>| {
        println!(
            "round trip, {what}, {latency_rounds} rounds (samples, median, interquartile mean):"
        );
        for (k, s) in kinds.iter().zip(&samples) {
            let all: Vec<f64> = of(s).concat();
            println!(
                "  {:<31} {:7} {:8.2} us {:8.2} us",
                k.label(),
                all.len(),
                median(all.clone()),
                iqm(all)
            );
        }
        ratios(&|s| of(s).iter().map(|round| iqm(round.clone())).collect());
    };
    round_trips(
        &format!("TCP (sockperf ping-pong, {SOCKPERF_SECS} s a round)"),
        &|s| &s.tcp_rtt_us,
    );
    round_trips(&format!("ICMP (ping, {PINGS} a round)"), &|s| &s.rtt_us);
}

/// Part 2: installing and removing one port's rules, on an empty node and beside 500.
fn install(id: u32) {
    let empty = install_times(id, "e");
    let empty_remove = remove_times(id, "r");
    let names: Vec<String> = (0..PORTS_PRESENT)
        .map(|i| format!("skf{:04x}{i:04x}n0", id))
        .collect();
    for name in &names {
        isolation::install(&policy(name)).unwrap();
    }
    let full = install_times(id, "f");
    let full_remove = remove_times(id, "s");
    for name in &names {
        isolation::remove(name).unwrap();
    }
    let empty_after = install_times(id, "a");
    println!("installing one port's rules (wall: median of {INSTALLS}; nft's CPU: mean):");
    for (what, (wall, cpu)) in [
        ("on an empty node        ", empty),
        ("with 500 ports installed", full),
        ("on the empty node again ", empty_after),
    ] {
        println!("  {what}  {:8.2} ms wall {:8.2} ms CPU", ms(wall), ms(cpu));
    }
    // Against the mean of the two empty-node figures taken before and after.
    let base = |a: Duration, b: Duration| (ms(a) + ms(b)) / 2.0;
    println!(
        "  {PORTS_PRESENT} ports / empty (mean)     {:8.3} wall  {:8.3} CPU",
        ms(full.0) / base(empty.0, empty_after.0),
        ms(full.1) / base(empty.1, empty_after.1)
    );
    println!("removing one port's rules (median of {INSTALLS}):");
    println!(
        "  on an empty node              {:8.2} ms",
        ms(empty_remove)
    );
    println!(
        "  with {PORTS_PRESENT} ports installed      {:8.2} ms",
        ms(full_remove)
    );
}

/// Median time to remove a freshly installed (untimed) port's rules.
fn remove_times(id: u32, kind: &str) -> Duration {
    let mut times: Vec<Duration> = (0..INSTALLS)
        .map(|i| {
            let name = format!("sk{kind}{id:04x}{i:03x}n0");
            isolation::install(&policy(&name)).unwrap();
            let t = Instant::now();
            isolation::remove(&name).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time (user + system) of the children waited for so far: `nft`'s, which
/// includes the kernel's work on its transaction. Unlike the wall time, it does not
/// count the time the machine's other load kept nft waiting for a core.
fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    micros(u.user_time()) + micros(u.system_time())
}

/// Median wall time to install (then remove, untimed) a fresh port's rules, and the
/// mean CPU time of the installs' nft runs.
fn install_times(id: u32, kind: &str) -> (Duration, Duration) {
    let mut cpu = Duration::ZERO;
    let mut times: Vec<Duration> = (0..INSTALLS)
        .map(|i| {
            let name = format!("sk{kind}{id:04x}{i:03x}n0");
            let p = policy(&name);
            let (t, c) = (Instant::now(), children_cpu());
            isolation::install(&p).unwrap();
            let took = t.elapsed();
            cpu += children_cpu() - c;
            isolation::remove(&name).unwrap();
            took
        })
        .collect();
    times.sort();
    (times[times.len() / 2], cpu / INSTALLS as u32)
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
    // iperf3's port and sockperf's.
    rules.push(FirewallRule {
        proto: FirewallProto::Tcp,
        ports: Some((5201, 5202)),
        from: Some(("10.237.0.0".parse().unwrap(), 24)),
    });
    rules.push(FirewallRule {
        proto: FirewallProto::Icmp,
        ports: None,
        from: None,
    });
    Firewall { rules }
}

/// What one kind measured, a value or samples per round.
#[derive(Default)]
struct Samples {
    gbits: Vec<f64>,
    /// ICMP round trips (ping).
    rtt_us: Vec<Vec<f64>>,
    /// TCP round trips (sockperf).
    tcp_rtt_us: Vec<Vec<f64>>,
}

/// One iperf3 run: the throughput it received, in Gbit/s.
fn iperf3(server: &Netns, client: &Netns) -> f64 {
    let mut iperf = server
        .cmd("iperf3", &["-s", "-1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .cmd("iperf3", &["-c", "10.237.0.1", "-t", "3", "-J"])
        .output()
        .unwrap();
    let _ = iperf.wait();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3: {}", String::from_utf8_lossy(&out.stdout)));
    bps / 1e9
}

/// [`PINGS`] pings' round trips, in microseconds.
fn ping(client: &Netns) -> Vec<f64> {
    let count = PINGS.to_string();
    let ping = client
        .cmd("ping", &["-c", &count, "-i", "0.002", "10.237.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout) + String::from_utf8_lossy(&ping.stderr);
    // 64 bytes from 10.237.0.1: icmp_seq=1 ttl=64 time=0.045 ms
    let trips: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split_once(" time=")?.1.strip_suffix(" ms")?.parse().ok())
        .map(|ms: f64| ms * 1e3)
        .collect();
    assert!(trips.len() > PINGS / 2, "ping: {text}");
    trips
}

/// The round trips of one sockperf ping-pong run over TCP (after its warm-up), in
/// microseconds, from its log of every message's send and receive times.
fn sockperf(server: &Netns, client: &Netns) -> Vec<f64> {
    let addr = ["-i", "10.237.0.1", "-p", "5202"];
    let mut srv = server
        .cmd("sockperf", &[&["server", "--tcp"][..], &addr].concat())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let log = format!("/tmp/isolation-bench-{}.csv", std::process::id());
    let run = client
        .cmd(
            "sockperf",
            &[
                &[
                    "ping-pong",
                    "--tcp",
                    "-t",
                    SOCKPERF_SECS,
                    "--full-log",
                    &log,
                ][..],
                &addr,
            ]
            .concat(),
        )
        .output()
        .unwrap();
    let _ = srv.kill();
    let _ = srv.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // packet, txTime(sec), rxTime(sec), latency(usec): the latency is half the trip.
    let trips: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split(',').map(|c| c.trim().parse::<f64>());
            let (_, tx, rx) = (cols.next()?, cols.next()?.ok()?, cols.next()?.ok()?);
            Some((rx - tx) * 1e6)
        })
        .collect();
    assert!(
        trips.len() > 100,
        "sockperf: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    trips
}

/// The rounds of throughput and of round trips: [`ROUNDS`] and [`LATENCY_ROUNDS`],
/// or `ISOLATION_BENCH_ROUNDS=T,L` (under zone/bench/isolation-node's instruction
/// clock a round gives the same figures as the next, so a few show it).
fn round_counts() -> (usize, usize) {
    let Ok(v) = std::env::var("ISOLATION_BENCH_ROUNDS") else {
        return (ROUNDS, LATENCY_ROUNDS);
    };
    v.split_once(',')
        .and_then(|(t, l)| Some((t.parse().ok()?, l.parse().ok()?)))
        .filter(|&(t, l)| t > 0 && l > 0)
        .unwrap_or_else(|| panic!("ISOLATION_BENCH_ROUNDS={v:?}: expected T,L, both > 0"))
}

/// [`Kind::EmptyHook`]'s and [`Kind::Calibration`]'s table.
const CALIBRATION_TABLE: &str = "calibration";

/// [`Kind::Calibration`]'s rule: `ISOLATION_BENCH_CALIBRATION_RULE`, to price a rule
/// before it goes into host::isolation (its table has empty sets `s4`, of
/// `iifname . ether saddr . ip saddr`, `s4i`, of `meta iif . ether saddr . ip saddr`,
/// and `s2`, of `ether saddr . ip saddr`, for lookups), or one that compares the
/// source MAC.
fn calibration_rule() -> String {
    std::env::var("ISOLATION_BENCH_CALIBRATION_RULE")
        .unwrap_or_else(|_| "ether saddr 02:00:00:00:00:01 drop".to_owned())
}

/// [`Kind::EmptyHook`] and [`Kind::Calibration`]: a bridge prerouting chain of `n`
/// copies of [`calibration_rule`], which every frame meets (and none matches).
fn calibration(n: usize) {
    let rules = format!("  {}\n", calibration_rule()).repeat(n);
    let script = format!(
        "table bridge {CALIBRATION_TABLE} {{\n \
         set s4 {{ typeof iifname . ether saddr . ip saddr; }}\n \
         set s4i {{ typeof meta iif . ether saddr . ip saddr; }}\n \
         set s2 {{ typeof ether saddr . ip saddr; }}\n \
         chain prerouting {{\n  type filter hook prerouting priority -300;\n{rules} }}\n}}\n"
    );
    isolation::apply("isolation-bench", &script).expect("nft: the calibration table");
}

/// [`Kind::Conntrack`]: the one rule that makes the kernel track bridged traffic
/// and lets a firewall read the result, where `ct` tracks it.
fn conntrack_only(ct: isolation::Conntrack) {
    let family = ct.family();
    let script = format!(
        "table {family} {CALIBRATION_TABLE} {{\n \
         chain forward {{\n  type filter hook forward priority 0;\n  ct state established,related accept\n }}\n}}\n"
    );
    isolation::apply("isolation-bench", &script).expect("nft: the conntrack table");
    if ct == isolation::Conntrack::BrNetfilter {
        for family in ["iptables", "ip6tables"] {
            let path = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
            std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }
}

/// No skerry tables in this namespace and bridged traffic not handed to the inet
/// hooks: a bridge with nothing on it.
fn no_filtering() {
    // `add` then `delete`: gone whether or not it was there, or an error (the node's
    // nft is not on the benchmark's PATH; a kind that kept its tables would be
    // measured as "nothing").
    let script: String = [
        ("bridge", isolation::TABLE),
        ("bridge", isolation::FW_TABLE),
        ("inet", isolation::FW_TABLE),
        ("bridge", CALIBRATION_TABLE),
        ("inet", CALIBRATION_TABLE),
    ]
    .iter()
    .map(|(family, table)| format!("add table {family} {table}\ndelete table {family} {table}\n"))
    .collect();
    isolation::apply("isolation-bench", &script).expect("nft: deleting the tables");
    // Off where br_netfilter is loaded (a firewall under Conntrack::BrNetfilter turns
    // it on); where it is not, nothing hands bridged traffic to the inet hooks.
    for family in ["iptables", "ip6tables"] {
        let path = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
        match std::fs::write(&path, "0") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.unwrap_or_else(|e| panic!("{path}: {e}")),
        }
    }
}

/// The mean of the middle half of `v`: finer than ping's whole microseconds, and not
/// moved by the outliers a busy machine adds.
fn iqm(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v.len() / 4, v.len() - v.len() / 4);
    v[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The first quartile, the median and the third quartile of `v`.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: usize| v[(v.len() - 1) * q / 4];
    (at(1), at(2), at(3))
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

/// Part 3: see the module's documentation. Prints a line per check; whether all
/// passed.
fn tenants(id: u32) -> bool {
    use std::net::UdpSocket;
    let tags = [format!("it{id:04x}"), format!("iu{id:04x}")];
    for tag in &tags {
        host::link::ensure_bridge(&monitor::default_bridge_name(tag)).unwrap();
    }
    let on = |n: u32, tag: &str, vlan: u16, ip: &str, firewall: Option<Firewall>| {
        let mut nic = nic(tag, ip);
        nic.vlan = vlan;
        let plan = NicPlan::new(
            &uuid(id, n),
            0,
            &nic,
            monitor::default_bridge_name(tag),
            firewall,
        );
        let ns = Netns::new();
        ns.plug(&plan);
        (ns, plan)
    };
    // Each firewall lets in UDP to port 9998 alone.
    let fw = || {
        Some(Firewall {
            rules: vec![FirewallRule {
                proto: FirewallProto::Udp,
                ports: Some((9998, 9998)),
                from: None,
            }],
        })
    };
    // Tenant 1 on VLAN 10 of tag t, tenant 2 on its VLAN 20, tenant 3 on tag u:
    // each a client at .5 and a server at .9.
    let (a1, _pa1) = on(1, &tags[0], 10, "10.240.0.5/24", None);
    let (b1, _pb1) = on(2, &tags[0], 10, "10.240.0.9/24", None);
    let (a2, _pa2) = on(3, &tags[0], 20, "10.240.0.5/24", None);
    let (b2, _pb2) = on(4, &tags[0], 20, "10.240.0.9/24", fw());
    let (a3, _pa3) = on(5, &tags[1], 0, "10.240.0.5/24", None);
    let (b3, _pb3) = on(6, &tags[1], 0, "10.240.0.9/24", fw());
    // Tag u's uplink: a port without rules (as init plugs a nic tag's link), its far
    // end a host outside at .7.
    let (wire, pw) = on(7, &tags[1], 0, "10.240.0.7/24", None);
    isolation::remove(&pw.host_if).unwrap();
    // A socket of `proto` in `ns`: UDP, whose frames the antispoof rules' fast path
    // leaves to its class chain (DHCP), or a raw one of IP protocol 253 (RFC 3692's
    // for experiments), which takes the fast path (one lookup for antispoof and the
    // zone) and which conntrack tracks by addresses alone. (UDP-Lite, which it tracks
    // by ports, never became "established" across the node kernel's bridge here.)
    let sock = |ns: &Netns, addr: &str, proto: i32| -> UdpSocket {
        let path = format!("/proc/{}/ns/net", ns.0.id());
        let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
        // A socket belongs to the namespace of the thread that makes it.
        std::thread::scope(|s| {
            s.spawn(|| {
                let netns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let kind = match proto {
                    libc::IPPROTO_UDP => libc::SOCK_DGRAM,
                    _ => libc::SOCK_RAW,
                };
                // SAFETY: socket(2) with integer arguments; the result is checked.
                let raw = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, proto) };
                assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
                // SAFETY: a fresh descriptor that nothing else owns.
                let fd =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                nix::sys::socket::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &nix::sys::socket::SockaddrIn::from(addr),
                )
                .unwrap();
                let sock = UdpSocket::from(fd);
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                sock
            })
            .join()
            .unwrap()
        })
    };
    let mut all = true;
    let mut check = |what: &str, to: &UdpSocket, want: &str, arrives: bool| {
        let mut buf = [0u8; 128];
        let mut got = false;
        while let Ok(n) = to.recv(&mut buf) {
            // A raw socket gets the IPv4 header too (its length in 32-bit words in
            // the first byte's low nibble; a UDP payload here starts with a letter).
            let data = match buf[0] >> 4 {
                4 => &buf[usize::from(buf[0] & 0xf) * 4..n],
                _ => &buf[..n],
            };
            got |= data == want.as_bytes();
        }
        let ok = got == arrives;
        all &= ok;
        let verdict = if ok { "ok" } else { "FAIL" };
        let how = if got { "arrived" } else { "did not arrive" };
        println!("  {verdict}: {what}: {want:?} {how}");
    };
    let send = |from: &UdpSocket, to: &str, what: &str| {
        from.send_to(what.as_bytes(), to).unwrap();
    };
    const RAW: i32 = 253;
    for (proto, name) in [(libc::IPPROTO_UDP, "UDP"), (RAW, "IP protocol 253")] {
        let udp = |ns: &Netns, addr: &str| sock(ns, addr, proto);
        println!("tenants with the same addresses, over {name}:");
        // Tenant 1's flow, both ways: established in its zone.
        let (s_a1, s_b1) = (udp(&a1, "10.240.0.5:4000"), udp(&b1, "10.240.0.9:9999"));
        send(&s_a1, "10.240.0.9:9999", "flow");
        check("tenant 1's flow", &s_b1, "flow", true);
        send(&s_b1, "10.240.0.5:4000", "reply");
        check("its reply", &s_a1, "reply", true);
        // The same packet from tenant 2 (another VLAN) and tenant 3 (another tag).
        let (s_a2, s_b2) = (udp(&a2, "10.240.0.5:4000"), udp(&b2, "10.240.0.9:9999"));
        send(&s_a2, "10.240.0.9:9999", "cross-vlan");
        check(
            "tenant 1's flow, sent on VLAN 20",
            &s_b2,
            "cross-vlan",
            false,
        );
        let (s_a3, s_b3) = (udp(&a3, "10.240.0.5:4000"), udp(&b3, "10.240.0.9:9999"));
        send(&s_a3, "10.240.0.9:9999", "cross-tag");
        check("tenant 1's flow, sent on tag u", &s_b3, "cross-tag", false);
        // What each firewall allows still arrives (its rule is UDP's), and what it
        // does not, does not.
        if proto == libc::IPPROTO_UDP {
            let s_b2_open = udp(&b2, "10.240.0.9:9998");
            send(&s_a2, "10.240.0.9:9998", "allowed");
            check("an allowed port", &s_b2_open, "allowed", true);
        }
        let s_a2_other = udp(&a2, "10.240.0.5:4001");
        send(&s_a2_other, "10.240.0.9:9999", "no-flow");
        check("a port no rule allows", &s_b2, "no-flow", false);
        // The firewalled instance's own flow: out, and the reply back in.
        send(&s_b2, "10.240.0.5:4000", "out");
        check("tenant 2's server's own flow", &s_a2, "out", true);
        send(&s_a2, "10.240.0.9:9999", "back");
        check("its reply, in through the firewall", &s_b2, "back", true);
        // The same with a host beyond tag u's uplink.
        let s_w = udp(&wire, "10.240.0.7:5000");
        send(&s_b3, "10.240.0.7:5000", "to-uplink");
        check(
            "tenant 3's server's flow out of the uplink",
            &s_w,
            "to-uplink",
            true,
        );
        send(&s_w, "10.240.0.9:9999", "from-uplink");
        check("its reply from the uplink", &s_b3, "from-uplink", true);
        let s_w_other = udp(&wire, "10.240.0.7:5001");
        // Without ports, another flow from the same host is the same flow.
        if proto == libc::IPPROTO_UDP {
            send(&s_w_other, "10.240.0.9:9999", "uplink-new");
            check("a new flow from the uplink", &s_b3, "uplink-new", false);
        }
    }
    drop((a1, b1, a2, b2, a3, b3, wire));
    for tag in &tags {
        let _ = Command::new("ip")
            .args(["link", "del", &monitor::default_bridge_name(tag)])
            .status();
    }
    all
}

/// A network namespace held by a sleeping process (killed on drop; a run under TCG
/// lasts far longer than ten minutes).
struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "1000000"])
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
