//! DHCP lease snooping on one instance port (a zone veth's host end, an HVM's tap), so
//! the antispoof rules can hold an `ip="dhcp"` nic to the IPv4 addresses its DHCP
//! server leased it, as libvirt's nwfilter DHCP IP learning and illumos's
//! `ip-nospoof` link protection do.
//!
//! The port's host end is watched, not the bridge: a frame the port *sends* (toward
//! the instance) got past the bridge and the instance's firewall, so an ACK seen there
//! is one the instance was really given. That ACK is trusted because the antispoof
//! rules drop DHCP server replies from instances that lack `allow-dhcp-spoofing`:
//! what reaches a port from the bridge came from the network's server, or from an
//! instance the operator trusts to be one. A RELEASE is taken only from the instance
//! itself, and only for its own MAC, so a guest can give up its own addresses and
//! nobody else's.
//!
//! Every frame comes from a hostile instance or passes through one's reach: reads are
//! into a fixed buffer, a call reads a fixed number of frames, parsing is bounds
//! checked slicing that answers `None` to anything it does not fully understand, and
//! [`Leases`] holds at most [`MAX_LEASES`] addresses.

// A packet socket and its BPF filter have no safe wrapper in nix.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// What one DHCP frame on a port says about the port's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A DHCPACK to the port's MAC, sent to the instance (outgoing on the host end):
    /// `addr` (yiaddr) is leased for `secs` seconds (option 51; `u32::MAX` is
    /// infinite).
    Ack {
        /// The address leased.
        addr: Ipv4Addr,
        /// For how long, in seconds.
        secs: u32,
    },
    /// A DHCPNAK to the port's MAC, sent to the instance: its leases are void.
    Nak,
    /// A DHCPRELEASE from the port's MAC, sent by the instance (incoming on the host
    /// end), of `addr` (ciaddr).
    Release {
        /// The address given up.
        addr: Ipv4Addr,
    },
}

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const IPPROTO_UDP: u8 = 17;
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// op, htype, hlen, hops, xid, secs, flags, four addresses, chaddr, sname, file.
const BOOTP_FIXED: usize = 236;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const DHCPACK: u8 = 5;
const DHCPNAK: u8 = 6;
const DHCPRELEASE: u8 = 7;

/// Parses one Ethernet frame seen on a port. `outgoing`: the host end sent it (toward
/// the instance: AF_PACKET's `sll_pkttype == PACKET_OUTGOING`); `mac`: the nic's MAC.
///
/// `None` for anything else: not IPv4/UDP/BOOTP/DHCP, the wrong direction or ports,
/// chaddr other than `mac`, a fragment, truncated, an options field without its end
/// option or with one running past it, an ACK with yiaddr 0.0.0.0 (an INFORM's
/// answer) or without option 51, a RELEASE with ciaddr 0.0.0.0. Checksums are not
/// checked: an outgoing frame may not have its UDP checksum computed yet when it is
/// seen (offload), and the instance's own stack checks what it is given.
pub fn parse(frame: &[u8], outgoing: bool, mac: [u8; 6]) -> Option<LeaseEvent> {
    if frame.get(12..ETH_HLEN)? != ETHERTYPE_IPV4 {
        return None;
    }
    let udp = udp_of(&frame[ETH_HLEN..])?;
    let (op, sport, dport) = if outgoing {
        (BOOTREPLY, SERVER_PORT, CLIENT_PORT)
    } else {
        (BOOTREQUEST, CLIENT_PORT, SERVER_PORT)
    };
    if be16(udp, 0)? != sport || be16(udp, 2)? != dport {
        return None;
    }
    // The UDP length may say less than the frame holds (Ethernet padding), never more.
    let udp_len = usize::from(be16(udp, 4)?).min(udp.len());
    let bootp = udp.get(8..udp_len)?;
    if bootp.len() < BOOTP_FIXED + MAGIC_COOKIE.len()
        || bootp[0] != op
        || bootp[1] != 1 // htype: Ethernet
        || bootp[2] != 6 // hlen
        || bootp[28..34] != mac
        || bootp[BOOTP_FIXED..BOOTP_FIXED + 4] != MAGIC_COOKIE
    {
        return None;
    }
    let ciaddr = ipv4(bootp, 12)?;
    let yiaddr = ipv4(bootp, 16)?;
    let opts = Options::parse(&bootp[BOOTP_FIXED + 4..])?;
    match (outgoing, opts.message_type?) {
        (true, DHCPACK) if !yiaddr.is_unspecified() => Some(LeaseEvent::Ack {
            addr: yiaddr,
            secs: opts.lease_secs?,
        }),
        (true, DHCPNAK) => Some(LeaseEvent::Nak),
        (false, DHCPRELEASE) if !ciaddr.is_unspecified() => {
            Some(LeaseEvent::Release { addr: ciaddr })
        }
        _ => None,
    }
}

/// The UDP datagram (header and data) in IPv4 packet `ip`, cut to what both the IP
/// total length and the frame hold; `None` if `ip` is not an unfragmented IPv4/UDP
/// packet.
fn udp_of(ip: &[u8]) -> Option<&[u8]> {
    let (version, ihl) = (ip.first()? >> 4, usize::from(ip[0] & 0xf) * 4);
    let flags_fragment = be16(ip, 6)?;
    // More-fragments set, or a fragment offset: a piece of a datagram.
    if version != 4 || ihl < 20 || flags_fragment & 0x3fff != 0 || *ip.get(9)? != IPPROTO_UDP {
        return None;
    }
    let total = usize::from(be16(ip, 2)?).min(ip.len());
    let udp = ip.get(ihl..total)?;
    (udp.len() >= 8).then_some(udp)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// The DHCP options [`parse`] reads; the first of each wins.
#[derive(Default)]
struct Options {
    message_type: Option<u8>,
    lease_secs: Option<u32>,
}

impl Options {
    /// Reads options up to the end option; `None` if an option runs past the data or
    /// the end option is missing (a truncated frame). Each turn consumes at least one
    /// byte, so the loop ends within `opts.len()` turns.
    fn parse(mut opts: &[u8]) -> Option<Options> {
        let mut found = Options::default();
        loop {
            match *opts.first()? {
                OPT_END => return Some(found),
                OPT_PAD => opts = &opts[1..],
                code => {
                    let len = usize::from(*opts.get(1)?);
                    let value = opts.get(2..2 + len)?;
                    match code {
                        OPT_MESSAGE_TYPE if len == 1 => {
                            found.message_type.get_or_insert(value[0]);
                        }
                        OPT_LEASE_TIME => {
                            if let Ok(secs) = value.try_into() {
                                found.lease_secs.get_or_insert(u32::from_be_bytes(secs));
                            }
                        }
                        _ => {}
                    }
                    opts = &opts[2 + len..];
                }
            }
        }
    }
}

/// The most frames one [`Snooper::events`] call reads, so a guest flooding its port
/// cannot keep the caller in one call.
pub const MAX_FRAMES_PER_CALL: usize = 64;

/// The most bytes kept of one frame: an MTU-1500 frame and then some. A DHCP frame
/// this cuts short loses its end option, and with it its meaning.
const FRAME_MAX: usize = 2048;

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump from instruction `at` to `yes` or `no` (absolute indices; the
/// kernel wants them relative to the next instruction).
const fn jump(at: usize, code: u32, k: u32, yes: usize, no: usize) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | code | libc::BPF_K) as u16,
        jt: (yes - at - 1) as u8,
        jf: (no - at - 1) as u8,
        k,
    }
}

const ACCEPT: usize = 16;
const DROP: usize = 17;
const LD_ABS_H: u32 = libc::BPF_LD | libc::BPF_H | libc::BPF_ABS;
const LD_IND_H: u32 = libc::BPF_LD | libc::BPF_H | libc::BPF_IND;

/// The classic BPF program the kernel runs on every frame of the port before queueing
/// it: unfragmented, untagged IPv4/UDP from port 67 to 68 or from 68 to 67. The rest
/// of a busy port's traffic never costs the snooper a wakeup or a copy. A tagged frame
/// is refused here, where the kernel still knows it was tagged (it hands packet
/// sockets the frame without its tag): a port's own traffic is untagged.
static FILTER: [libc::sock_filter; 18] = [
    stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32,
    ),
    jump(1, libc::BPF_JEQ, 0, 2, DROP),
    stmt(LD_ABS_H, 12), // ethertype
    jump(3, libc::BPF_JEQ, 0x0800, 4, DROP),
    stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 23), // IPv4 protocol
    jump(5, libc::BPF_JEQ, IPPROTO_UDP as u32, 6, DROP),
    stmt(LD_ABS_H, 20), // flags and fragment offset
    jump(7, libc::BPF_JSET, 0x3fff, DROP, 8),
    stmt(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 14), // X = IPv4 header length
    stmt(LD_IND_H, 14),                                    // UDP source port
    jump(10, libc::BPF_JEQ, SERVER_PORT as u32, 11, 13),
    stmt(LD_IND_H, 16), // destination port
    jump(12, libc::BPF_JEQ, CLIENT_PORT as u32, ACCEPT, DROP),
    jump(13, libc::BPF_JEQ, CLIENT_PORT as u32, 14, DROP),
    stmt(LD_IND_H, 16),
    jump(15, libc::BPF_JEQ, SERVER_PORT as u32, ACCEPT, DROP),
    stmt(libc::BPF_RET | libc::BPF_K, FRAME_MAX as u32),
    stmt(libc::BPF_RET | libc::BPF_K, 0),
];

/// A packet socket on one port that sees only DHCP (UDP 67<->68) frames, both
/// directions.
#[derive(Debug)]
pub struct Snooper {
    fd: OwnedFd,
    mac: [u8; 6],
    port: String,
}

fn failed(port: &str, op: &str) -> impl FnOnce(io::Error) -> io::Error {
    let what = format!("{port}: {op}");
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Snooper {
    /// Opens it on the existing link `port` for the nic with `mac`: non-blocking,
    /// close-on-exec. The filter is attached before the socket is bound to the port
    /// (until then it receives nothing), so no other traffic is ever queued on it.
    ///
    /// It is bound for every protocol, not IPv4 alone: the kernel shows a link's
    /// outgoing frames only to sockets that take all protocols, and the filter
    /// chooses IPv4 anyway.
    pub fn open(port: &str, mac: [u8; 6]) -> io::Result<Snooper> {
        let fd = crate::link::packet_socket(libc::SOCK_NONBLOCK)
            .map_err(failed(port, "opening a packet socket"))?;
        let prog = libc::sock_fprog {
            len: FILTER.len() as u16,
            filter: FILTER.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` is a sock_fprog that lives across the call, whose `filter`
        // points at the `FILTER.len()` instructions of a static; the kernel checks and
        // copies them and never writes through the pointer; `fd` is open.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(failed(port, "attaching the DHCP filter")(
                io::Error::last_os_error(),
            ));
        }
        crate::link::bind_packet(&fd, port, libc::ETH_P_ALL as u16)
            .map_err(failed(port, "binding to the port"))?;
        Ok(Snooper {
            fd,
            mac,
            port: port.to_owned(),
        })
    }

    /// Reads what is queued, at most [`MAX_FRAMES_PER_CALL`] frames, and returns the
    /// lease events among them, in order. Never blocks: poll the socket ([`AsFd`]) for
    /// more. ENETDOWN, which the kernel reports once when the port is down (as it is
    /// when the snooper is opened before the port is plugged in, and when it goes
    /// away), is no error: the socket resumes when the port comes up. Another read
    /// error other than EAGAIN/EINTR is returned, and the events read before it in
    /// this call are lost with it.
    ///
    /// A guest flooding its port with DHCP-shaped frames can fill this socket's queue
    /// (the kernel then drops frames) and so hide its own ACKs, costing only itself.
    pub fn events(&self) -> io::Result<Vec<LeaseEvent>> {
        let mut events = Vec::new();
        let mut buf = [0u8; FRAME_MAX];
        for _ in 0..MAX_FRAMES_PER_CALL {
            let mut from = libc::sockaddr_ll {
                sll_family: 0,
                sll_protocol: 0,
                sll_ifindex: 0,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 0,
                sll_addr: [0; 8],
            };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` and at
            // most `from_len` bytes into `from`, both live and exclusively borrowed
            // across the call; `self.fd` is open.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ if e.raw_os_error() == Some(libc::ENETDOWN) => continue,
                    _ => return Err(failed(&self.port, "reading DHCP frames")(e)),
                }
            }
            // Without MSG_TRUNC, recvfrom returns at most the buffer's length: a
            // longer frame is cut to it.
            let frame = &buf[..(n as usize).min(buf.len())];
            let outgoing = from.sll_pkttype == libc::PACKET_OUTGOING;
            events.extend(parse(frame, outgoing, self.mac));
        }
        Ok(events)
    }

    /// The port's name.
    pub fn port(&self) -> &str {
        &self.port
    }
}

impl AsFd for Snooper {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The most addresses [`Leases`] holds for one port, so a hostile server or guest
/// cannot grow it.
pub const MAX_LEASES: usize = 4;

/// Whether the port of `nic` is held to the addresses its DHCP server leases it (and
/// so snooped): an `ip="dhcp"` nic, unless `allow-ip-spoofing` frees its sources.
pub fn needed(nic: &spec::Nic) -> bool {
    nic.ip == spec::IpConfig::Dhcp && !nic.allow.ip_spoofing
}

/// The least time between two changes of a port's rules that its leases cause: an
/// instance that makes its server ACK and releases as fast as it can (each a change,
/// each an nf_tables transaction) gets one change this often, the last state winning.
pub const MIN_RULES_GAP: Duration = Duration::from_millis(250);

/// The IPv4 addresses one port holds by DHCP, each until its lease ends, and those
/// last put into its rules.
#[derive(Debug, Default, Clone)]
pub struct Leases {
    /// Each address once, with when its lease ends (`None`: never).
    held: Vec<(Ipv4Addr, Option<Instant>)>,
    /// What [`Leases::put`] last recorded as in the rules, and when.
    put: Vec<Ipv4Addr>,
    put_at: Option<Instant>,
}

impl Leases {
    /// Applies `ev` seen at `now`; returns whether the held addresses changed (a
    /// renewal that only moves an end returns false). Ack: holds `addr` until
    /// `now + secs` (replacing its earlier end), for ever if `secs` is `u32::MAX` or
    /// the end is past what an [`Instant`] can hold. Nak: drops all. Release: drops
    /// `addr`. Holding [`MAX_LEASES`] already, an Ack of another address replaces the
    /// one that ends first.
    pub fn apply(&mut self, ev: LeaseEvent, now: Instant) -> bool {
        match ev {
            LeaseEvent::Ack { addr, secs } => {
                let end = match secs {
                    u32::MAX => None,
                    secs => now.checked_add(Duration::from_secs(secs.into())),
                };
                if let Some(held) = self.held.iter_mut().find(|(a, _)| *a == addr) {
                    held.1 = end;
                    return false;
                }
                if self.held.len() >= MAX_LEASES {
                    // A lease that never ends (`is_none()`) is the last to go.
                    let first = (0..self.held.len())
                        .min_by_key(|&i| (self.held[i].1.is_none(), self.held[i].1));
                    if let Some(i) = first {
                        self.held.swap_remove(i);
                    }
                }
                self.held.push((addr, end));
                true
            }
            LeaseEvent::Nak => {
                let had = !self.held.is_empty();
                self.held.clear();
                had
            }
            LeaseEvent::Release { addr } => {
                let before = self.held.len();
                self.held.retain(|(a, _)| *a != addr);
                self.held.len() != before
            }
        }
    }

    /// Drops the leases that have ended by `now`; returns whether any was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.held.len();
        self.held.retain(|(_, end)| end.is_none_or(|end| end > now));
        self.held.len() != before
    }

    /// The addresses held, sorted.
    pub fn addrs(&self) -> Vec<Ipv4Addr> {
        let mut addrs: Vec<Ipv4Addr> = self.held.iter().map(|(a, _)| *a).collect();
        addrs.sort();
        addrs
    }

    /// When the next lease ends, if any does.
    pub fn next_end(&self) -> Option<Instant> {
        self.held.iter().filter_map(|(_, end)| *end).min()
    }

    /// Applies `events` seen at `now`, drops the leases ended by then, and returns the
    /// addresses to put into the port's rules now, if any ([`Leases::due`]), recorded
    /// as put ([`Leases::put`]).
    pub fn update(
        &mut self,
        events: impl IntoIterator<Item = LeaseEvent>,
        now: Instant,
    ) -> Option<Vec<Ipv4Addr>> {
        for ev in events {
            self.apply(ev, now);
        }
        self.expire(now);
        let addrs = self.due(now)?;
        self.put(addrs.clone(), now);
        Some(addrs)
    }

    /// The addresses to put into the port's rules at `now`: those held, when they are
    /// not what was put last and the last change is [`MIN_RULES_GAP`] old. Record
    /// them with [`Leases::put`] once they are in (or have failed to go in: the next
    /// change tries again, not every wake).
    pub fn due(&self, now: Instant) -> Option<Vec<Ipv4Addr>> {
        let addrs = self.addrs();
        let rested = self.put_at.is_none_or(|at| now >= at + MIN_RULES_GAP);
        (addrs != self.put && rested).then_some(addrs)
    }

    /// Records `addrs` as put into the port's rules at `now`.
    pub fn put(&mut self, addrs: Vec<Ipv4Addr>, now: Instant) {
        self.put = addrs;
        self.put_at = Some(now);
    }

    /// When to look again: the next lease's end, or when a change held back by
    /// [`MIN_RULES_GAP`] is due.
    pub fn next_wake(&self) -> Option<Instant> {
        let held_back = (self.addrs() != self.put)
            .then_some(self.put_at)
            .flatten()
            .map(|at| at + MIN_RULES_GAP);
        self.next_end().into_iter().chain(held_back).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_changes_reach_the_rules_at_most_once_a_gap() {
        let t0 = Instant::now();
        let a = Ipv4Addr::new(10, 88, 0, 1);
        let mut l = Leases::default();
        assert_eq!(l.due(t0), None, "nothing to put");
        l.apply(LeaseEvent::Ack { addr: a, secs: 60 }, t0);
        // The first change goes in at once.
        assert_eq!(l.due(t0), Some(vec![a]));
        l.put(vec![a], t0);
        assert_eq!(l.due(t0), None);
        // A release right after waits for the gap, then goes in.
        l.apply(LeaseEvent::Release { addr: a }, t0);
        assert_eq!(l.due(t0 + MIN_RULES_GAP / 2), None);
        assert_eq!(l.next_wake(), Some(t0 + MIN_RULES_GAP));
        assert_eq!(l.due(t0 + MIN_RULES_GAP), Some(vec![]));
        // Back and forth within a gap is no change at all.
        l.put(vec![], t0 + MIN_RULES_GAP);
        l.apply(LeaseEvent::Ack { addr: a, secs: 60 }, t0 + MIN_RULES_GAP);
        l.apply(LeaseEvent::Release { addr: a }, t0 + MIN_RULES_GAP);
        assert_eq!(l.due(t0 + MIN_RULES_GAP * 3), None);
        assert_eq!(l.next_wake(), None);
    }

    const MAC: [u8; 6] = [0x02, 0x08, 0x20, 0x4a, 0x11, 0x01];
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 23);

    /// A DHCP frame as a server or client writes one, field by field, so a test can
    /// spoil exactly one thing.
    #[derive(Clone)]
    struct Dhcp {
        op: u8,
        sport: u16,
        dport: u16,
        protocol: u8,
        flags_fragment: u16,
        ip_options: Vec<u8>,
        chaddr: [u8; 6],
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        options: Vec<u8>,
    }

    impl Dhcp {
        fn reply(message_type: u8, yiaddr: Ipv4Addr, more: &[u8]) -> Dhcp {
            let mut options = vec![OPT_MESSAGE_TYPE, 1, message_type];
            options.extend_from_slice(more);
            options.push(OPT_END);
            Dhcp {
                op: BOOTREPLY,
                sport: 67,
                dport: 68,
                protocol: IPPROTO_UDP,
                flags_fragment: 0x4000, // don't fragment
                ip_options: vec![],
                chaddr: MAC,
                ciaddr: Ipv4Addr::UNSPECIFIED,
                yiaddr,
                options,
            }
        }

        fn ack(addr: Ipv4Addr, secs: u32) -> Dhcp {
            let s = secs.to_be_bytes();
            // A server identifier too, as servers send, before the lease time.
            Dhcp::reply(
                5,
                addr,
                &[54, 4, 10, 88, 0, 1, 51, 4, s[0], s[1], s[2], s[3]],
            )
        }

        fn offer(addr: Ipv4Addr) -> Dhcp {
            Dhcp::reply(2, addr, &[51, 4, 0, 0, 0x0e, 0x10])
        }

        fn nak() -> Dhcp {
            Dhcp::reply(6, Ipv4Addr::UNSPECIFIED, &[])
        }

        fn release(addr: Ipv4Addr) -> Dhcp {
            Dhcp {
                op: BOOTREQUEST,
                sport: 68,
                dport: 67,
                ciaddr: addr,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                ..Dhcp::reply(7, Ipv4Addr::UNSPECIFIED, &[])
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut bootp = vec![self.op, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0];
            bootp.extend_from_slice(&self.ciaddr.octets());
            bootp.extend_from_slice(&self.yiaddr.octets());
            bootp.extend_from_slice(&[0; 8]); // siaddr, giaddr
            bootp.extend_from_slice(&self.chaddr);
            bootp.resize(BOOTP_FIXED, 0); // chaddr padding, sname, file
            bootp.extend_from_slice(&MAGIC_COOKIE);
            bootp.extend_from_slice(&self.options);

            let udp_len = (8 + bootp.len()) as u16;
            let ihl = 20 + self.ip_options.len();
            let total = (ihl as u16) + udp_len;
            let mut f = vec![0xff; 6]; // broadcast, as to a client without an address
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
            f.extend_from_slice(&ETHERTYPE_IPV4);
            f.extend_from_slice(&[0x40 | (ihl / 4) as u8, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&self.flags_fragment.to_be_bytes());
            f.extend_from_slice(&[64, self.protocol, 0, 0, 10, 88, 0, 1, 255, 255, 255, 255]);
            f.extend_from_slice(&self.ip_options);
            f.extend_from_slice(&self.sport.to_be_bytes());
            f.extend_from_slice(&self.dport.to_be_bytes());
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[0, 0]); // no checksum
            f.extend_from_slice(&bootp);
            f
        }
    }

    fn out(d: &Dhcp) -> Option<LeaseEvent> {
        parse(&d.bytes(), true, MAC)
    }

    fn inward(d: &Dhcp) -> Option<LeaseEvent> {
        parse(&d.bytes(), false, MAC)
    }

    /// An hour's DHCPACK of ADDR with `spoil` done to it, as sent to the instance.
    fn spoiled(spoil: impl FnOnce(&mut Dhcp)) -> Option<LeaseEvent> {
        let mut d = Dhcp::ack(ADDR, 3600);
        spoil(&mut d);
        out(&d)
    }

    /// Its bytes with `spoil` done to them.
    fn spoiled_bytes(spoil: impl FnOnce(&mut Vec<u8>)) -> Option<LeaseEvent> {
        let mut f = Dhcp::ack(ADDR, 3600).bytes();
        spoil(&mut f);
        parse(&f, true, MAC)
    }

    fn ack(addr: Ipv4Addr, secs: u32) -> LeaseEvent {
        LeaseEvent::Ack { addr, secs }
    }

    const OTHER_MAC: [u8; 6] = [0x02, 0x08, 0x20, 0x4a, 0x11, 0x02];

    #[test]
    fn an_ack_nak_and_release_each_say_what_they_mean() {
        assert_eq!(out(&Dhcp::ack(ADDR, 3600)), Some(ack(ADDR, 3600)));
        assert_eq!(out(&Dhcp::ack(ADDR, u32::MAX)), Some(ack(ADDR, u32::MAX)));
        assert_eq!(out(&Dhcp::nak()), Some(LeaseEvent::Nak));
        let release = LeaseEvent::Release { addr: ADDR };
        assert_eq!(inward(&Dhcp::release(ADDR)), Some(release));
    }

    #[test]
    fn frames_the_wrong_way_or_for_another_mac_are_refused() {
        assert_eq!(inward(&Dhcp::ack(ADDR, 3600)), None, "ACK from the guest");
        assert_eq!(inward(&Dhcp::nak()), None, "NAK from the guest");
        assert_eq!(out(&Dhcp::release(ADDR)), None, "RELEASE to the guest");
        assert_eq!(spoiled(|d| d.chaddr = OTHER_MAC), None, "another nic's ACK");
        let other = Dhcp {
            chaddr: OTHER_MAC,
            ..Dhcp::release(ADDR)
        };
        assert_eq!(inward(&other), None, "another nic's RELEASE");
        assert_eq!(spoiled(|d| d.dport = 67), None, "server to server");
        assert_eq!(spoiled(|d| d.sport = 68), None, "client to client");
        assert_eq!(spoiled(|d| d.op = BOOTREQUEST), None);
    }

    #[test]
    fn what_grants_nothing_is_refused() {
        assert_eq!(out(&Dhcp::offer(ADDR)), None, "an OFFER leases nothing");
        assert_eq!(out(&Dhcp::reply(5, ADDR, &[])), None, "no lease time");
        assert_eq!(out(&Dhcp::reply(5, ADDR, &[51, 2, 0, 1])), None);
        let inform = Dhcp::ack(Ipv4Addr::UNSPECIFIED, 3600);
        assert_eq!(out(&inform), None, "an INFORM's ACK");
        let release = Dhcp::release(Ipv4Addr::UNSPECIFIED);
        assert_eq!(inward(&release), None);
        let bootp = |d: &mut Dhcp| d.options = vec![51, 4, 0, 0, 0x0e, 0x10, OPT_END];
        assert_eq!(spoiled(bootp), None, "BOOTP, not DHCP");
    }

    #[test]
    fn fragments_and_other_protocols_are_refused() {
        assert_eq!(spoiled(|d| d.flags_fragment = 0x2000), None, "first piece");
        assert_eq!(spoiled(|d| d.flags_fragment = 0x0010), None, "later piece");
        assert_eq!(spoiled(|d| d.protocol = 6), None, "TCP");
        let ipv6 = |f: &mut Vec<u8>| f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(spoiled_bytes(ipv6), None);
        assert_eq!(spoiled_bytes(|f| f[14] = 0x65), None, "IP version 6");
        assert_eq!(spoiled_bytes(|f| f[14] = 0x44), None, "IHL 4");
        assert_eq!(spoiled_bytes(|f| f[12] = 0x81), None, "802.1Q");
    }

    #[test]
    fn ip_options_move_the_udp_header() {
        // Router alert, then no-ops and the end of the options.
        let options = |d: &mut Dhcp| d.ip_options = vec![0x94, 4, 0, 0, 1, 1, 1, 0];
        assert_eq!(spoiled(options), Some(ack(ADDR, 3600)));
        // A header longer than the packet's total length.
        let long = |f: &mut Vec<u8>| {
            f[14] = 0x4f;
            f[16..18].copy_from_slice(&50u16.to_be_bytes());
        };
        assert_eq!(spoiled_bytes(long), None);
    }

    #[test]
    fn every_truncation_is_refused_and_none_panics() {
        for (d, outgoing) in [
            (Dhcp::ack(ADDR, 3600), true),
            (Dhcp::nak(), true),
            (Dhcp::release(ADDR), false),
        ] {
            let full = d.bytes();
            for len in 0..full.len() {
                let cut = parse(&full[..len], outgoing, MAC);
                assert_eq!(cut, None, "cut to {len}");
            }
            assert!(parse(&full, outgoing, MAC).is_some());
        }
    }

    #[test]
    fn lengths_that_claim_more_than_the_frame_are_not_believed() {
        let claim_more = |f: &mut Vec<u8>| {
            f[16..18].copy_from_slice(&u16::MAX.to_be_bytes()); // IP total length
            f[38..40].copy_from_slice(&u16::MAX.to_be_bytes()); // UDP length
        };
        assert_eq!(spoiled_bytes(claim_more), Some(ack(ADDR, 3600)));
        // Ethernet padding past the IP total length is not read as options.
        let end_in_padding = |f: &mut Vec<u8>| {
            *f.last_mut().unwrap() = OPT_PAD;
            f.push(OPT_END);
        };
        assert_eq!(spoiled_bytes(end_in_padding), None);
        let short_udp = |f: &mut Vec<u8>| f[38..40].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(spoiled_bytes(short_udp), None);
    }

    #[test]
    fn garbage_options_are_refused() {
        let past_the_end = vec![53, 1, 5, 51, 4, 0, 0, 0x0e, 0x10, 12, 200, b'x', OPT_END];
        assert_eq!(spoiled(|d| d.options = past_the_end), None);
        let no_end = vec![53, 1, 5, 51, 4, 0, 0, 0x0e, 0x10];
        assert_eq!(spoiled(|d| d.options = no_end), None);
        let cookie = 14 + 20 + 8 + BOOTP_FIXED;
        assert_eq!(spoiled_bytes(|f| f[cookie] = 98), None, "bad cookie");
        // Pads are skipped, nothing after the end is read, the first of each wins.
        let padded = vec![0, 0, 53, 1, 5, 0, 51, 4, 0, 0, 0, 9, OPT_END, 53, 1, 6];
        assert_eq!(spoiled(|d| d.options = padded), Some(ack(ADDR, 9)));
        let twice = vec![
            53, 1, 5, 53, 1, 6, 51, 4, 0, 0, 0, 9, 51, 4, 0, 0, 0, 1, 255,
        ];
        assert_eq!(spoiled(|d| d.options = twice), Some(ack(ADDR, 9)));
        // Every value in every option byte: no panic, whatever it parses as.
        let base = Dhcp::ack(ADDR, 3600).bytes();
        for at in base.len() - Dhcp::ack(ADDR, 3600).options.len()..base.len() {
            for v in 0..=u8::MAX {
                let mut f = base.clone();
                f[at] = v;
                let _ = parse(&f, true, MAC);
            }
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, 0, last)
    }

    #[test]
    fn a_lease_is_held_until_it_ends_and_a_renewal_moves_the_end() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        assert_eq!(l.next_end(), None);
        assert!(l.apply(ack(ip(9), 60), t0));
        assert!(l.apply(ack(ip(3), 600), t0));
        assert_eq!(l.addrs(), vec![ip(3), ip(9)], "sorted");
        assert_eq!(l.next_end(), Some(t0 + Duration::from_secs(60)));
        assert!(!l.expire(t0 + Duration::from_secs(59)));
        assert!(
            !l.apply(ack(ip(9), 60), t0 + Duration::from_secs(30)),
            "a renewal"
        );
        assert_eq!(l.next_end(), Some(t0 + Duration::from_secs(90)));
        assert!(!l.expire(t0 + Duration::from_secs(60)), "renewed past 60");
        assert!(l.expire(t0 + Duration::from_secs(90)), "ended at 90");
        assert_eq!(l.addrs(), vec![ip(3)]);
        assert!(!l.expire(t0 + Duration::from_secs(90)));
        assert!(l.expire(t0 + Duration::from_secs(600)));
        assert!(l.addrs().is_empty());
        assert_eq!(l.next_end(), None);
    }

    #[test]
    fn a_nak_drops_all_and_a_release_drops_one() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        assert!(!l.apply(LeaseEvent::Nak, t0), "nothing to drop");
        l.apply(ack(ip(1), 60), t0);
        l.apply(ack(ip(2), 60), t0);
        assert!(
            !l.apply(LeaseEvent::Release { addr: ip(7) }, t0),
            "not held"
        );
        assert!(l.apply(LeaseEvent::Release { addr: ip(1) }, t0));
        assert_eq!(l.addrs(), vec![ip(2)]);
        l.apply(ack(ip(1), 60), t0);
        assert!(l.apply(LeaseEvent::Nak, t0));
        assert!(l.addrs().is_empty());
    }

    #[test]
    fn at_most_four_are_held_and_the_first_to_end_goes() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.apply(ack(ip(1), u32::MAX), t0);
        l.apply(ack(ip(2), 30), t0);
        l.apply(ack(ip(3), 10), t0);
        l.apply(ack(ip(4), 20), t0);
        assert!(l.apply(ack(ip(5), 5), t0));
        assert_eq!(
            l.addrs(),
            vec![ip(1), ip(2), ip(4), ip(5)],
            "ip(3) ended first"
        );
        for last in 6..=200 {
            l.apply(ack(ip(last), 1000), t0);
        }
        assert_eq!(l.addrs().len(), MAX_LEASES);
        assert!(l.addrs().contains(&ip(1)), "the infinite lease goes last");
    }

    #[test]
    fn endless_and_overflowing_leases_never_end() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.apply(ack(ip(1), u32::MAX), t0);
        assert_eq!(l.next_end(), None);
        assert!(!l.expire(t0 + Duration::from_secs(u64::from(u32::MAX) * 2)));
        l.apply(ack(ip(2), u32::MAX - 1), t0);
        assert!(l.next_end().is_some_and(|end| end > t0));
        // The last second an Instant can hold: any lease from then overflows it,
        // which means it never ends.
        let mut far = t0;
        for bit in (0..64).rev() {
            far = far
                .checked_add(Duration::from_secs(1 << bit))
                .unwrap_or(far);
        }
        let mut l = Leases::default();
        assert!(l.apply(ack(ip(3), u32::MAX - 1), far));
        assert_eq!(l.addrs(), vec![ip(3)]);
        assert_eq!(l.next_end(), None);
        assert!(!l.expire(far));
    }
}
