//! cargo-fuzz target: the metadata protocol server fed what a guest sends; see
//! harness/mdata_session.rs (shared with the stable test mdata/tests/fuzz_harness.rs,
//! which runs the seeds in seeds-mdata/).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run mdata_session corpus/mdata_session seeds-mdata`
#![no_main]

#[path = "../harness/mdata_session.rs"]
mod mdata_session;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mdata_session::run(data);
});
