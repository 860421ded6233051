//! cargo-fuzz target: see harness/vmm/boot_disk.rs (shared with the stable test
//! vmm/tests/fuzz_harnesses.rs, which runs the seeds in seeds-boot_disk/).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run boot_disk corpus/boot_disk seeds-boot_disk`

#![no_main]
#[path = "../harness/vmm/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::boot_disk::run(data);
});
