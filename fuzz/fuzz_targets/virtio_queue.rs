//! cargo-fuzz target: virtio descriptors through virtio-blk; see harness/vmm/virtio_queue.rs
//! (shared with the stable test vmm/tests/fuzz_harnesses.rs, which runs the seeds in
//! seeds-virtio_queue/).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_queue corpus/virtio_queue seeds-virtio_queue`

#![no_main]
#[path = "../harness/vmm/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::virtio_queue::run(data);
});
