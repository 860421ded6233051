//! Bounded random-descriptor test (the stable sibling of vmm/fuzz): drives virtio-blk
//! and virtio-net through the PCI transport with random descriptor tables, rings,
//! indexes and queue addresses. The VMM must never panic; every round ends with the
//! device either still working or marked as needing a reset.

use kvm_ioctls::Kvm;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::pci::PciDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::net::Net;
use vmm::devices::virtio::transport::pci::VirtioPciDevice;
use vmm::devices::virtio::VirtioDevice;

const MEM: u64 = 1 << 20;
const COMMON: u64 = 0;
const NOTIFY: u64 = 0x3000;

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn w<D: VirtioDevice>(dev: &mut VirtioPciDevice<D>, off: u64, v: u64, len: usize) {
    dev.bar_write(COMMON + off, &v.to_le_bytes()[..len]);
}

fn status<D: VirtioDevice>(dev: &mut VirtioPciDevice<D>) -> u8 {
    let mut b = [0u8];
    dev.bar_read(COMMON + 0x14, &mut b);
    b[0]
}

/// Negotiates features and sets up every queue with (mostly) valid addresses.
fn bring_up<D: VirtioDevice>(dev: &mut VirtioPciDevice<D>, rng: &mut Rng, queues: u16) {
    w(dev, 0x14, 0, 1); // reset
    w(dev, 0x14, 3, 1); // ACK | DRIVER
    w(dev, 0x08, 1, 4);
    w(dev, 0x0c, 1, 4); // VERSION_1
    w(dev, 0x14, 3 | 8, 1);
    for q in 0..queues {
        w(dev, 0x16, u64::from(q), 2);
        let size = [1u64, 2, 8, 16, 256][rng.below(5) as usize];
        w(dev, 0x18, size, 2);
        let base = 0x1000 * (1 + u64::from(q) * 16);
        let wild = rng.below(10) == 0;
        let addr = |r: &mut Rng, a: u64| if wild { r.next() } else { a };
        let (d, a, u) = (
            addr(rng, base),
            addr(rng, base + 0x4000),
            addr(rng, base + 0x8000),
        );
        w(dev, 0x20, d, 8);
        w(dev, 0x28, a, 8);
        w(dev, 0x30, u, 8);
        w(dev, 0x1a, rng.below(4), 2); // MSI-X vector (MSI-X itself stays off)
        w(dev, 0x1c, 1, 2);
    }
    w(dev, 0x14, 3 | 8 | 4, 1);
}

fn scribble(mem: &GuestMemoryMmap, rng: &mut Rng) {
    // Random descriptors pointing mostly inside memory, random flags/next/indexes.
    for _ in 0..64 {
        let at = rng.below(MEM / 16) * 16;
        let desc_addr = if rng.below(4) == 0 {
            rng.next()
        } else {
            rng.below(MEM)
        };
        let len = if rng.below(4) == 0 {
            rng.next() as u32
        } else {
            rng.below(0x3000) as u32
        };
        let flags = rng.below(8) as u16;
        let next = rng.below(300) as u16;
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&desc_addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&d, GuestAddress(at)).unwrap();
    }
    for q in 0..2u64 {
        let avail = 0x1000 * (1 + q * 16) + 0x4000;
        // Mostly a plausible index (a few past what was used), sometimes garbage.
        let used: u16 = mem.read_obj(GuestAddress(avail + 0x4000 + 2)).unwrap();
        let idx = if rng.below(5) == 0 {
            rng.next() as u16
        } else {
            used.wrapping_add(rng.below(4) as u16)
        };
        mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
        for i in 0..16u64 {
            mem.write_obj(rng.below(300) as u16, GuestAddress(avail + 4 + 2 * i))
                .unwrap();
        }
    }
}

fn run<D: VirtioDevice>(
    mut dev: VirtioPciDevice<D>,
    mem: &GuestMemoryMmap,
    queues: u16,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut broken = 0;
    let mut progressed = 0;
    for round in 0..1500 {
        if round % 8 == 0 {
            bring_up(&mut dev, &mut rng, queues);
        }
        scribble(mem, &mut rng);
        let q = rng.below(u64::from(queues) + 1); // sometimes a queue that does not exist
        let used_idx = GuestAddress(0x1000 * (1 + q * 16) + 0x8000 + 2);
        let before: u16 = mem.read_obj(used_idx).unwrap_or(0);
        dev.bar_write(NOTIFY + q * 4, &(q as u16).to_le_bytes());
        // Queues a device serves from its own thread (net RX) are run here directly.
        dev.process(q as usize);
        if mem.read_obj::<u16>(used_idx).unwrap_or(0) != before {
            progressed += 1;
        }
        // Random reads of every register must answer too.
        let mut b = [0u8; 4];
        dev.bar_read(rng.below(0x8000), &mut b[..1 + rng.below(4) as usize]);
        if status(&mut dev) & 0x40 != 0 {
            broken += 1;
            bring_up(&mut dev, &mut rng, queues);
        }
    }
    // Wild addresses (1 in 10) must have been caught by the queue checks at least once.
    assert!(
        broken > 0,
        "no round ended with NEEDS_RESET: the checks never fired"
    );
    // And requests did get through: the used rings moved.
    assert!(progressed > 30, "only {progressed} rounds used any buffer");
    eprintln!("{progressed} rounds used buffers, {broken} needed a reset");
}

fn vm() -> Arc<kvm_ioctls::VmFd> {
    let kvm = Kvm::new().expect("/dev/kvm is needed (MSI delivery goes through a VM fd)");
    Arc::new(kvm.create_vm().expect("create VM"))
}

#[test]
fn random_descriptors_never_panic_blk() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(1 << 20).unwrap();
    let block = Block::open(disk.path(), false).unwrap();
    run(
        VirtioPciDevice::new(block, 1, mem.clone(), vm()),
        &mem,
        1,
        0x5eed_b10c,
    );
}

#[test]
fn random_descriptors_never_panic_net() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    // A datagram socket pair stands in for the tap: frames in, frames out.
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        None,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK,
    )
    .unwrap();
    let peer = std::fs::File::from(theirs);
    for _ in 0..32 {
        let _ = std::io::Write::write(&mut &peer, &[0xabu8; 1500]);
    }
    let net = Net::new(
        std::fs::File::from(ours),
        "fuzz0".into(),
        [2, 0, 0, 0, 0, 1],
    )
    .unwrap();
    run(
        VirtioPciDevice::new(net, 2, mem.clone(), vm()),
        &mem,
        2,
        0x05ee_d0e7,
    );
}
