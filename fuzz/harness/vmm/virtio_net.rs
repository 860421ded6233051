//! virtio-net through its PCI transport: the input sets up the queues (sizes,
//! addresses, vectors), fills guest memory (descriptor tables, rings, headers), queues
//! frames on the "tap" (a datagram socket pair), then the guest notifies TX and the RX
//! path runs, a few rounds.

use super::Input;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::pci::{PciBus, PciConfigIo, PciDevice};
use vmm::devices::virtio::net::Net;
use vmm::devices::virtio::transport::pci::VirtioPciDevice;
use vmm::devices::BusDevice;

const MEM: usize = 64 << 10;
const NOTIFY: u64 = 0x3000;
/// The largest frame virtio-net writes to its tap (64 KiB plus an Ethernet header
/// and a VLAN tag: `MAX_FRAME` in vmm/src/devices/virtio/net.rs).
const MAX_FRAME: usize = 65562;

type Dev = Arc<Mutex<VirtioPciDevice<Net>>>;

fn w(dev: &Dev, off: u64, v: u64, len: usize) {
    dev.lock().unwrap().bar_write(off, &v.to_le_bytes()[..len]);
}

/// One input; the used-ring indexes of RX and TX at the end (how far the device got).
pub fn run(data: &[u8]) -> (u16, u16) {
    let mut input = Input(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let Ok((ours, theirs)) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        None,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK,
    ) else {
        return (0, 0);
    };
    let net = Net::new(
        std::fs::File::from(ours),
        "fuzz0".into(),
        [2, 0, 0, 0, 0, 1],
    )
    .expect("net device");
    let bus = PciBus::new();
    let dev: Dev = Arc::new(Mutex::new(VirtioPciDevice::new(
        net,
        bus.next_slot(),
        mem.clone(),
        super::msi(),
    )));
    bus.add(dev.clone());
    let dev = &dev;
    // Driver bring-up, with queue parameters from the input.
    w(dev, 0x14, 0, 1);
    w(dev, 0x14, 3, 1);
    w(dev, 0x08, 1, 4);
    w(dev, 0x0c, 1, 4);
    w(dev, 0x08, 0, 4);
    w(dev, 0x0c, u64::from(input.u32()), 4);
    w(dev, 0x14, 3 | 8, 1);
    for q in 0..2u64 {
        w(dev, 0x16, q, 2);
        w(dev, 0x18, u64::from(1u16 << (input.u8() % 9)), 2);
        let base = 0x4000 * q;
        let pick = |i: &mut Input, a: u64| if i.u8() == 0xff { i.u64() } else { a };
        let (d, a, u) = (
            pick(&mut input, base),
            pick(&mut input, base + 0x1000),
            pick(&mut input, base + 0x2000),
        );
        w(dev, 0x20, d, 8);
        w(dev, 0x28, a, 8);
        w(dev, 0x30, u, 8);
        w(dev, 0x1a, u64::from(input.u8() % 4), 2);
        w(dev, 0x1c, 1, 2);
    }
    // MSI-X on, vectors unmasked, with guest-chosen messages.
    let mut io = PciConfigIo::new(bus);
    io.write(0, &(0x8000_0000u32 | (1 << 11) | 0x40).to_le_bytes());
    io.write(6, &0x8000u16.to_le_bytes());
    for v in 0..3u64 {
        w(dev, 0x4000 + 16 * v, input.u64(), 8);
        w(dev, 0x4000 + 16 * v + 8, u64::from(input.u32()), 4);
        w(dev, 0x4000 + 16 * v + 12, 0, 4);
    }
    w(dev, 0x14, 3 | 8 | 4, 1);
    // Frames waiting on the tap.
    let peer = std::fs::File::from(theirs);
    for _ in 0..(input.u8() % 4) {
        let len = usize::from(input.u16()) % 2048;
        let _ = nix::unistd::write(&peer, &vec![0xab; len]);
    }
    // The rest is guest memory (descriptors, rings, headers and data).
    let body = input.0;
    let n = body.len().min(MEM);
    if mem.write_slice(&body[..n], GuestAddress(0)).is_err() {
        return (0, 0);
    }
    for round in 0..4 {
        w(dev, NOTIFY + 4, 1, 2);
        dev.lock().unwrap().process(0);
        // Bump the avail indexes a little, like a driver adding buffers.
        for q in 0..2u64 {
            let at = GuestAddress(0x4000 * q + 0x1002);
            let idx: u16 = mem.read_obj(at).unwrap_or(0);
            let _ = mem.write_obj(idx.wrapping_add(round), at);
        }
    }
    // What TX put on the wire: whole frames without their virtio header, never more
    // than the largest frame a tap takes, whatever the descriptors said.
    let mut frame = vec![0u8; 2 * MAX_FRAME];
    while let Ok(n) = nix::unistd::read(&peer, &mut frame) {
        assert!(n <= MAX_FRAME, "a {n}-byte frame reached the tap");
    }
    drop(peer);
    let used = |q: u64| mem.read_obj(GuestAddress(0x4000 * q + 0x2002)).unwrap_or(0);
    (used(0), used(1))
}
