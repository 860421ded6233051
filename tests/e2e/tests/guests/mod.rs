//! The node test's checks inside its HVM guests: both boot at once and are waited for
//! in one loop on the node; tiny01 (debian-hvm, skerry's own first-boot agent) is held
//! to its address by the antispoof chain; cloud01 (debian-cloudinit-hvm, Debian's own
//! cloud-init) provisions itself from its metadata, sees its grown boot disk and, with
//! `allow-ip-spoofing=#true`, may take another address.

use e2e::node::Node;
use std::time::Duration;

/// One command in the node's console shell.
pub const SHELL: Duration = Duration::from_secs(60);

/// Runs `cmd` in the node's shell; panics with its output unless it exits 0.
pub fn sh(node: &mut Node, cmd: &str, timeout: Duration) -> String {
    let (out, rc) = node
        .shell(cmd, timeout)
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    assert_eq!(rc, 0, "`{cmd}` in the node exited {rc}:\n{out}");
    out
}

/// A guest whose console log the node test waits on.
pub struct Guest<'a> {
    pub alias: &'a str,
    pub uuid: &'a str,
    /// A fixed string (grep -F) that says the guest got as far as the test needs.
    pub ready: &'a str,
    /// How long it may take, from the start of the wait.
    pub limit: Duration,
}

/// Waits until every guest's console log holds its `ready` string, polling all of them
/// about once a second in one loop on the node (the guests boot at the same time, so
/// the wait is the slowest boot, not their sum). Time is read from the node's
/// `/proc/uptime`, not counted in rounds: a round takes longer than its one-second
/// sleep on a loaded TCG node. Panics naming each guest that is not ready within its
/// limit, with the tail of its console; prints how long each took.
pub fn wait_ready(node: &mut Node, guests: &[Guest]) {
    let mut script = String::from(
        "read s _ < /proc/uptime; s=${s%.*}; while :; do \
         read t _ < /proc/uptime; e=$((${t%.*} - s)); n=0; ",
    );
    for (k, g) in guests.iter().enumerate() {
        script.push_str(&format!(
            "[ -n \"$w{k}\" ] || {{ grep -aqF '{}' /zones/{}/console.log && w{k}=$e; }}; \
             [ -n \"$w{k}\" ] || [ $e -ge {} ] || n=$((n+1)); ",
            g.ready,
            g.uuid,
            g.limit.as_secs()
        ));
    }
    script.push_str("[ $n -gt 0 ] || break; sleep 1; done; ");
    // Node::shell appends `; echo ...`: the script must not end in `;`.
    let report: Vec<String> = (0..guests.len())
        .map(|k| format!("echo \"ready{k} ${{w{k}:-never}}\""))
        .collect();
    script.push_str(&report.join("; "));
    let longest = guests.iter().map(|g| g.limit).max().unwrap_or_default();
    let out = sh(node, &script, longest + SHELL);
    for (k, g) in guests.iter().enumerate() {
        let when = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ready{k} ")))
            .unwrap_or("never");
        if when == "never" {
            let console = node.shell(&format!("tail -n 25 /zones/{}/console.log", g.uuid), SHELL);
            panic!(
                "{}'s console shows no {:?} within {}s; its console:\n{console:?}",
                g.alias,
                g.ready,
                g.limit.as_secs()
            );
        }
        println!(
            "{}: {:?} on its console {when}s into the wait",
            g.alias, g.ready
        );
    }
}

/// Issue 14, HVM side: antispoof on tiny01's tap (in the node's `bridge skerry`
/// table, the tap in `port_class` with every check on, and held to 10.88.0.31 in
/// `addr4`). Root in the guest moves its nic to 10.88.0.99 on its console; the zone,
/// which reached 10.88.0.31 before, gets no answer from the new address (the guest's
/// ARP and replies carry an address not its own).
pub fn guest_cannot_take_another_address(node: &mut Node, tiny01: &str) {
    let tap: String = tiny01
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    let tap = format!("sk{tap}n0");
    let table = sh(node, "nft list table bridge skerry", SHELL);
    assert!(
        table.contains(&format!("\"{tap}\" : jump class_15"))
            && table.contains(&format!("\"{tap}\" . 10.88.0.31")),
        "no antispoof for tiny01's tap {tap} holding it to 10.88.0.31:\n{table}"
    );
    // Its firewall (`allow "icmp"`): the mark in fw_on and ICMP from anywhere in the
    // mark's shard, in the node kernel's range sets; the zone's pings to 10.88.0.31
    // went through it. The node's kernel tracks bridged traffic itself
    // (nf_conntrack_bridge), so the firewall is in the bridge table and there is no
    // inet table (no br_netfilter trip); its chain marks the frames itself, so the
    // antispoof table has no forward hook.
    assert!(!table.contains("hook forward"), "{table}");
    let mark = format!("0x{:08x}", host::isolation::mark_of(&tap));
    let fw = sh(node, "nft list table bridge skerry_fw", SHELL);
    assert!(
        fw.contains(&format!("\"{tap}\" : {mark}"))
            && fw.contains(&format!("{mark} . icmp . 0.0.0.0/0"))
            && fw.contains(&format!("{mark} . ipv6-icmp . ::/0"))
            && fw.contains("ct state established,related accept"),
        "no firewall for tiny01's tap {tap} (mark {mark}) in bridge skerry_fw:\n{fw}"
    );
    let tables = sh(node, "nft list tables", SHELL);
    assert!(!tables.contains("inet "), "{tables}");
    // Its segment's conntrack zone (tag admin, VLAN 0), set on what it sends and on
    // what reaches its MAC, before conntrack, so another tenant's flow with the same
    // addresses is not "established" here (zone/tests/isolation_node.rs).
    let zoned = table.lines().any(|l| {
        l.trim_start()
            .trim_start_matches("elements = { ")
            .strip_prefix(&format!("\"{tap}\" : "))
            .is_some_and(|z| {
                z.trim_end_matches([',', ' ', '}'])
                    .parse::<u16>()
                    .is_ok_and(|z| z > 0)
            })
    });
    // The zones are set in antispoof's chain, the fast path's lookup giving them
    // (nft lists `ether type ip` as implied).
    assert!(
        zoned
            && table.contains("ct zone set iifname . ether saddr . ip saddr map @fast4z accept")
            && table.contains("ct zone set iifname map @port_zone accept")
            && !table.contains("chain zone"),
        "no conntrack zone for tiny01's tap {tap}:\n{table}"
    );
    // What the firewall does not allow is dropped: a TCP connection from the zone to
    // a port of tiny01 times out (without the firewall its kernel refuses at once).
    let nc = sh(
        node,
        "zlogin hello nc -w 3 10.88.0.31 9 </dev/null 2>&1; true",
        SHELL,
    );
    assert!(
        nc.contains("timed out"),
        "TCP to tiny01's port 9 got through its firewall: {nc}"
    );
    node.send("vmadm console tiny01\n").unwrap();
    node.send("\r").unwrap();
    node.wait_for(r"tiny01 login:", SHELL)
        .expect("tiny01's console offers a login");
    node.send("root\r").unwrap();
    node.wait_for(r"root@tiny01[^#\n]*# ", SHELL)
        .expect("root logs in on tiny01's console");
    node.send(
        "dev=$(ip -o -4 addr show | awk '/10.88.0.31/ {print $2}'); \
         ip addr del 10.88.0.31/24 dev $dev && ip addr add 10.88.0.99/24 dev $dev && \
         echo E2E''MOVED $dev\r",
    )
    .unwrap();
    node.wait_for(r"E2EMOVED \S+", SHELL)
        .expect("tiny01 moves to 10.88.0.99");
    // Ctrl-] detaches; vmadm drops what was typed after it, so wait until it is gone.
    node.send("\x1d").unwrap();
    node.wait_for(r"detached from tiny01", SHELL)
        .expect("vmadm console detaches on Ctrl-]");
    let (ping, rc) = node
        .shell("zlogin hello ping -c 3 -W 2 10.88.0.99", SHELL)
        .expect("the node's shell answers after the console detaches");
    assert!(
        rc != 0 && ping.contains("0 packets received"),
        "tiny01 answered from an address not its own (exit {rc}):\n{ping}"
    );
}

/// cloud01's user-script (manifests/hvm-cloudinit.kdl, run by cloud-init's cloud-final):
/// it prints what cloud-init set up (hostname, addresses, default route, root's keys)
/// and the size of its root filesystem on the console, then moves its nic from the
/// manifest's 10.88.0.32 to 10.88.0.98, which its `allow-ip-spoofing=#true` allows.
/// The markers are split by quotes so that only their output matches, never the script.
pub const CLOUD01_USER_SCRIPT: &str = r#"#!/bin/sh
echo "E2E-CLOUD-""USER-SCRIPT on $(hostname)"
ip -4 -o addr show | sed 's/^/E2E-CLOUD-ADDR /'
ip -4 route show default | sed 's/^/E2E-CLOUD-ROUTE /'
sed 's/^/E2E-CLOUD-KEY /' /root/.ssh/authorized_keys
df -m / | awk 'NR == 2 { print "E2E-CLOUD-ROOT-MIB", $2 }'
dev=$(ip -o -4 addr show | awk '/10.88.0.32/ { print $2 }')
ip addr del 10.88.0.32/24 dev "$dev" && ip addr add 10.88.0.98/24 dev "$dev" && echo "E2E-CLOUD-""MOVED $dev""#;

/// What cloud01 shows when cloud-init is done, its user-script run or not ([`wait_ready`]):
/// the last line of cloud-final names the datasource. A cloud-init that failed on the
/// way is then reported at once by [`cloud01_provisioned_itself`], not after the limit.
pub const CLOUD01_READY: &str = "Datasource DataSourceSmartOS";

/// The debian-cloudinit-hvm image's disk (MiB, `image_size`); cloud01's `disk root
/// size="2G"` is twice that. A root filesystem bigger than this can only come from the
/// grown disk (init's clone, extended to 2 GiB) and the image's skerry-growroot filling it.
const CLOUD_IMAGE_MIB: u64 = 1024;

/// Issue 13's cloud-init clause, issue 14's `allow-ip-spoofing` half and issue 18's
/// root-grow path, on cloud01 under the node's VMM: every check is made and the
/// failures are reported together, so one node boot shows all that is wrong.
pub fn cloud01_provisioned_itself(node: &mut Node, cloud01: &str, ssh_key: &str) {
    let marks = sh(
        node,
        &format!("grep -a -e E2E-CLOUD -e skerry-growroot /zones/{cloud01}/console.log"),
        SHELL,
    );
    let mut wrong = Vec::new();
    let console = sh(
        node,
        &format!("grep -a -c 'failed run of stage' /zones/{cloud01}/console.log || true"),
        SHELL,
    );
    if console.trim() != "0" {
        wrong.push("cloud-init failed a stage (`failed run of stage` on the console)");
    }
    if marks.matches("E2E-CLOUD-USER-SCRIPT on cloud01").count() != 1 {
        wrong.push("the user-script did not run once, in a guest whose hostname is cloud01");
    }
    if !marks
        .lines()
        .any(|l| l.contains("E2E-CLOUD-ADDR") && l.contains("inet 10.88.0.32/24"))
    {
        wrong.push("no static address 10.88.0.32/24 from sdc:nics");
    }
    if !marks
        .lines()
        .any(|l| l.contains("E2E-CLOUD-ROUTE default via 10.88.0.1"))
    {
        wrong.push("no default route via the manifest's gateway 10.88.0.1");
    }
    if !marks.contains(&format!("E2E-CLOUD-KEY {ssh_key}")) {
        wrong.push("root's authorized_keys lacks the instance's ssh-key");
    }
    if !marks.contains("E2E-CLOUD-MOVED") {
        wrong.push("the user-script did not move the nic to 10.88.0.98");
    }
    let root_mib = marks
        .lines()
        .find_map(|l| l.split_once("E2E-CLOUD-ROOT-MIB ").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse::<u64>().ok());
    println!(
        "cloud01: root filesystem {root_mib:?} MiB (image {CLOUD_IMAGE_MIB} MiB, disk 2048 MiB)"
    );
    if root_mib.is_none_or(|mib| mib <= CLOUD_IMAGE_MIB * 3 / 2) {
        wrong.push("the root filesystem does not fill the 2G disk (not grown past the image)");
    }
    // The zone on the same nic tag reaches cloud01 at the address it took itself.
    let (ping, rc) = node
        .shell("zlogin hello ping -c 3 -W 5 10.88.0.98", SHELL)
        .expect("the node's shell answers");
    if rc != 0 || !ping.contains("3 packets received") {
        wrong.push("the zone gets no answer from cloud01's new address 10.88.0.98");
    }
    if !wrong.is_empty() {
        let tail = node.shell(&format!("tail -n 60 /zones/{cloud01}/console.log"), SHELL);
        panic!(
            "cloud01 (cloud-init): {}\nits markers:\n{marks}\nzlogin hello ping 10.88.0.98 \
             (exit {rc}):\n{ping}\nits console:\n{tail:?}",
            wrong.join("; ")
        );
    }
}
