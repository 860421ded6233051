//! virtio descriptor handling, virtio-blk's side: the input becomes guest memory
//! holding a descriptor table (0x0), an avail ring (0x1000) and the request headers,
//! data and status bytes the descriptors point to; virtio-blk then processes the
//! queue against a 64 KiB disk file.
//!
//! Layout: byte 0 picks the queue size (1 << (b % 9)), bit 0 of byte 1 turns on
//! `VIRTIO_F_RING_EVENT_IDX`, bytes 2..4 are the avail index, the rest is guest memory
//! from address 0.

use std::cell::RefCell;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::VirtioDevice;

const MEM: usize = 64 << 10;
const USED_IDX: u64 = 0x2002;
/// Where the seed's requests have their status bytes.
const SEED_STATUS: u64 = 0x5000;

thread_local! {
    static DISK: RefCell<(tempfile::NamedTempFile, Block)> = RefCell::new({
        let f = tempfile::NamedTempFile::new().expect("temp disk");
        f.as_file().set_len(64 << 10).expect("size");
        let b = Block::open(f.path(), false).expect("open disk");
        (f, b)
    });
}

/// One input; the used index afterwards (how many requests the device completed) and
/// the three bytes at 0x5000 (where the seed's requests have their status bytes).
pub fn run(data: &[u8]) -> (u16, [u8; 3]) {
    if data.len() < 4 {
        return (0, [0xff; 3]);
    }
    let size = 1u16 << (data[0] % 9); // 1..256
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let body = &data[4..];
    let n = body.len().min(MEM);
    mem.write_slice(&body[..n], GuestAddress(0)).expect("fill");
    // The avail index comes from the input too (it also sits in memory at 0x1002).
    mem.write_obj(u16::from_le_bytes([data[2], data[3]]), GuestAddress(0x1002))
        .expect("avail idx");
    let mut q = Queue::new(256).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(0x1000), Some(0));
    q.set_used_ring_address(Some(0x2000), Some(0));
    q.set_ready(true);
    if !q.is_valid(&mem) {
        return (0, [0xff; 3]);
    }
    q.set_event_idx(data[1] & 1 == 1);
    DISK.with(|d| {
        let _ = d.borrow_mut().1.process_queue(0, &mut q, &mem);
    });
    let mut status = [0xff; 3];
    let _ = mem.read_slice(&mut status, GuestAddress(SEED_STATUS));
    (mem.read_obj(GuestAddress(USED_IDX)).unwrap_or(0), status)
}
