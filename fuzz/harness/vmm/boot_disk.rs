//! The boot-disk reader: the input is a disk image (partition tables, ext4), scanned
//! as the sandboxed child does, its frames received as the monitor does, with small
//! caps; or, when the first byte says so, the input is itself what a compromised
//! reader sends the monitor.

use std::path::Path;
use std::sync::Arc;
use vmm::bootdisk::{receive, scan, Limits};

/// One input; whether a kernel came out of it.
pub fn run(data: &[u8]) -> bool {
    let limits = Limits {
        kernel: 256 << 10,
        initrd: 256 << 10,
        ..Limits::default()
    };
    let Ok(out) = tempfile::tempdir() else {
        return false;
    };
    let Some((mode, rest)) = data.split_first() else {
        return false;
    };
    let frames = if mode & 0x80 != 0 {
        rest.to_vec()
    } else {
        let mut frames = Vec::new();
        scan(Arc::new(rest.to_vec()), &limits, &mut frames).expect("writing to memory");
        frames
    };
    receive(&mut &frames[..], Path::new("fuzz.raw"), out.path(), &limits).is_ok()
}
