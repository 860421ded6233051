//! Placeholder until the spec engineer's `vmadm validate` is merged; replaced at merge.

/// `vmadm validate ...`: not available in this branch yet.
pub fn run(_args: &[std::ffi::OsString]) -> i32 {
    eprintln!("validate: not merged yet");
    2
}
