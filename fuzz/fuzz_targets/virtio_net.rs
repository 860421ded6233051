//! cargo-fuzz target: see harness/vmm/virtio_net.rs (shared with the stable test
//! vmm/tests/fuzz_harnesses.rs, which runs the seeds in seeds-virtio_net/).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_net corpus/virtio_net seeds-virtio_net`

#![no_main]
#[path = "../harness/vmm/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::virtio_net::run(data);
});
