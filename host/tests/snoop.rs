//! host::snoop against the real kernel, as root, in a throwaway network namespace: a
//! veth pair whose end `port` stands for an instance port's host end and whose end
//! `guest` for the instance. A frame written out of `port` is one the bridge sends
//! the instance (PACKET_OUTGOING on `port`); one written on `guest` is one the
//! instance sends (it arrives on `port`).

mod common;

use common::Netns;
use host::snoop::{LeaseEvent, Snooper};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x02, 0x08, 0x20, 0x4a, 0x11, 0x01];
const OTHER_MAC: [u8; 6] = [0x02, 0x08, 0x20, 0x4a, 0x11, 0x02];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, last)
}

/// An Ethernet frame carrying IPv4 `protocol` with `ports` at the head of its
/// payload (as UDP and TCP both have them), then `rest`.
fn ipv4(protocol: u8, flags_fragment: u16, ports: (u16, u16), rest: &[u8]) -> Vec<u8> {
    let (dst, src) = if ports.0 == 67 {
        ([0xff; 6], SERVER_MAC)
    } else {
        (SERVER_MAC, MAC)
    };
    let l4_len = (8 + rest.len()) as u16;
    let mut f = [dst, src].concat();
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&(20 + l4_len).to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&flags_fragment.to_be_bytes());
    f.extend_from_slice(&[64, protocol, 0, 0, 10, 88, 0, 1, 255, 255, 255, 255]);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&l4_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(rest);
    f
}

/// A BOOTP message with DHCP `options` (the end option added).
fn bootp(op: u8, chaddr: [u8; 6], ciaddr: Ipv4Addr, yiaddr: Ipv4Addr, options: &[u8]) -> Vec<u8> {
    let mut b = vec![op, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0];
    b.extend_from_slice(&ciaddr.octets());
    b.extend_from_slice(&yiaddr.octets());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&chaddr);
    b.resize(236, 0);
    b.extend_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(options);
    b.push(255);
    b
}

fn ack(chaddr: [u8; 6], yiaddr: Ipv4Addr, secs: u32) -> Vec<u8> {
    let s = secs.to_be_bytes();
    let options = [53, 1, 5, 51, 4, s[0], s[1], s[2], s[3]];
    let msg = bootp(2, chaddr, Ipv4Addr::UNSPECIFIED, yiaddr, &options);
    ipv4(17, 0, (67, 68), &msg)
}

fn nak() -> Vec<u8> {
    let msg = bootp(
        2,
        MAC,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[53, 1, 6],
    );
    ipv4(17, 0, (67, 68), &msg)
}

fn release(ciaddr: Ipv4Addr) -> Vec<u8> {
    let msg = bootp(1, MAC, ciaddr, Ipv4Addr::UNSPECIFIED, &[53, 1, 7]);
    ipv4(17, 0, (68, 67), &msg)
}

/// `frame` with four bytes of IPv4 options (no-ops and an end), moving its UDP header.
fn with_ip_options(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14] = 0x46;
    let total = u16::from_be_bytes([frame[16], frame[17]]) + 4;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame.splice(34..34, [1, 1, 1, 0]);
    frame
}

/// `frame` with an 802.1Q tag for VLAN 5.
fn tagged(mut frame: Vec<u8>) -> Vec<u8> {
    frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    frame
}

/// A packet socket that writes frames out of link `name` (and reads none).
fn writer(name: &str) -> OwnedFd {
    host::link::frame_writer(name).unwrap()
}

/// A snooped port and the two ways frames reach it.
struct Port {
    snooper: Snooper,
    /// Writes out of the port: toward the instance.
    to_guest: OwnedFd,
    /// Writes on the instance's end: they arrive on the port.
    from_guest: OwnedFd,
    _ns: Netns,
}

impl Port {
    fn new() -> Port {
        let ns = Netns::new();
        ns.ip(&[
            "link", "add", "port", "type", "veth", "peer", "name", "guest",
        ]);
        ns.ip(&["link", "set", "port", "up"]);
        ns.ip(&["link", "set", "guest", "up"]);
        let (snooper, to_guest, from_guest) = ns.run(|| {
            let snooper = Snooper::open("port", MAC).unwrap();
            (snooper, writer("port"), writer("guest"))
        });
        assert_eq!(snooper.port(), "port");
        Port {
            snooper,
            to_guest,
            from_guest,
            _ns: ns,
        }
    }

    fn send_to_guest(&self, frame: &[u8]) {
        assert_eq!(
            send(self.to_guest.as_raw_fd(), frame, MsgFlags::empty()),
            Ok(frame.len())
        );
    }

    fn send_from_guest(&self, frame: &[u8]) {
        assert_eq!(
            send(self.from_guest.as_raw_fd(), frame, MsgFlags::empty()),
            Ok(frame.len())
        );
    }

    /// Waits until the snooper has something queued.
    fn readable(&self) {
        let mut fds = [PollFd::new(self.snooper.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        assert_eq!(n, 1, "nothing queued on the port within 5 s");
    }

    /// The events read until `last` is among them (it was sent after the others being
    /// checked, on the same path, so they were queued before it).
    fn events_through(&self, last: LeaseEvent) -> Vec<LeaseEvent> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while !seen.contains(&last) {
            assert!(
                Instant::now() < deadline,
                "{last:?} never came; saw {seen:?}"
            );
            self.readable();
            seen.extend(self.snooper.events().unwrap());
        }
        seen
    }

    /// The first frame queued on the snooper, left there.
    fn first_queued(&self) -> Vec<u8> {
        self.readable();
        let mut buf = vec![0; 4096];
        let n = recv(
            self.snooper.as_fd().as_raw_fd(),
            &mut buf,
            MsgFlags::MSG_PEEK,
        )
        .unwrap();
        buf.truncate(n);
        buf
    }
}

#[test]
fn an_ack_sent_to_the_instance_is_learned_and_one_from_it_is_not() {
    let p = Port::new();
    let leased = LeaseEvent::Ack {
        addr: addr(23),
        secs: 3600,
    };
    p.send_to_guest(&ack(MAC, addr(23), 3600));
    assert_eq!(p.events_through(leased), vec![leased]);

    // The instance cannot lease itself an address.
    p.send_from_guest(&ack(MAC, addr(66), 3600));
    let released = LeaseEvent::Release { addr: addr(23) };
    p.send_from_guest(&release(addr(23)));
    assert_eq!(p.events_through(released), vec![released]);

    // Another nic's lease is not this one's.
    p.send_to_guest(&ack(OTHER_MAC, addr(67), 3600));
    let leased = LeaseEvent::Ack {
        addr: addr(24),
        secs: 60,
    };
    p.send_to_guest(&ack(MAC, addr(24), 60));
    assert_eq!(p.events_through(leased), vec![leased]);

    // Only the instance releases its leases.
    p.send_to_guest(&release(addr(24)));
    p.send_to_guest(&nak());
    assert_eq!(p.events_through(LeaseEvent::Nak), vec![LeaseEvent::Nak]);

    // The kernel's filter finds the UDP ports past IP options.
    let leased = LeaseEvent::Ack {
        addr: addr(25),
        secs: 60,
    };
    p.send_to_guest(&with_ip_options(ack(MAC, addr(25), 60)));
    assert_eq!(p.events_through(leased), vec![leased]);
    assert_eq!(p.snooper.events().unwrap(), vec![]);
}

#[test]
fn only_dhcp_frames_are_queued() {
    let p = Port::new();
    let dhcp_ish = bootp(
        2,
        MAC,
        Ipv4Addr::UNSPECIFIED,
        addr(30),
        &[53, 1, 5, 51, 4, 0, 0, 0, 9],
    );
    p.send_to_guest(&ipv4(17, 0, (53, 53), b"not dhcp"));
    p.send_to_guest(&ipv4(6, 0, (67, 68), &dhcp_ish)); // TCP
    p.send_to_guest(&ipv4(17, 0, (67, 67), &dhcp_ish));
    p.send_to_guest(&ipv4(17, 0x2000, (67, 68), &dhcp_ish)); // a first fragment
    let last = ack(MAC, addr(31), 60);
    p.send_to_guest(&last);
    assert_eq!(p.first_queued(), last, "nothing before the ACK was queued");
    let leased = LeaseEvent::Ack {
        addr: addr(31),
        secs: 60,
    };
    assert_eq!(p.events_through(leased), vec![leased]);

    p.send_from_guest(&ipv4(17, 0, (68, 53), b"not dhcp"));
    p.send_from_guest(&ipv4(6, 0, (68, 67), &dhcp_ish)); // TCP
    p.send_from_guest(&tagged(release(addr(31))));
    let last = release(addr(32));
    p.send_from_guest(&last);
    assert_eq!(
        p.first_queued(),
        last,
        "nothing before the RELEASE was queued"
    );
    let released = LeaseEvent::Release { addr: addr(32) };
    assert_eq!(p.events_through(released), vec![released]);
}

#[test]
fn a_missing_port_is_named() {
    let e = Snooper::open("sknothere0", MAC).unwrap_err();
    assert!(e.to_string().contains("sknothere0"), "{e}");
}
