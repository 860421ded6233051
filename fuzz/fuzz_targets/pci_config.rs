//! cargo-fuzz target: see harness/vmm/pci_config.rs (shared with the stable test
//! vmm/tests/fuzz_harnesses.rs, which runs the seeds in seeds-pci_config/).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run pci_config corpus/pci_config seeds-pci_config`

#![no_main]
#[path = "../harness/vmm/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::pci_config::run(data);
});
