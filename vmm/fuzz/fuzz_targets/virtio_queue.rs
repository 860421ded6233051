//! Fuzzes virtio descriptor handling: the input becomes guest memory holding a
//! descriptor table and avail ring (plus request headers and data); virtio-blk then
//! processes the queue. Any panic is a bug: guest memory is untrusted.
//!
//! Run: `cd vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_queue`

#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::VirtioDevice;

const MEM: usize = 64 << 10;

thread_local! {
    static DISK: RefCell<(tempfile::NamedTempFile, Block)> = RefCell::new({
        let f = tempfile::NamedTempFile::new().expect("temp disk");
        f.as_file().set_len(64 << 10).expect("size");
        let b = Block::open(f.path(), false)
            .expect("open disk");
        (f, b)
    });
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
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
        return;
    }
    q.set_event_idx(data[1] & 1 == 1);
    DISK.with(|d| {
        let _ = d.borrow_mut().1.process_queue(0, &mut q, &mem);
    });
});
