//! The seccomp filter is installed in a zone and refuses, with EPERM, the calls it
//! lists and every x32 call. Each call is made by a tiny static x86-64 program
//! written here byte by byte (no compiler, no libc in the image): it makes one raw
//! syscall with zero arguments and exits with the errno it got.

mod common;

use common::{busybox_rootfs, require_root, sh};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A static ELF executable that calls syscall `nr` with all arguments 0 and exits
/// with the errno (the negated result, low byte).
fn syscall_probe(nr: u32) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let mut code = vec![0xb8]; // mov eax, nr
    code.extend_from_slice(&nr.to_le_bytes());
    code.extend_from_slice(&[
        0x31, 0xff, // xor edi, edi
        0x31, 0xf6, // xor esi, esi
        0x31, 0xd2, // xor edx, edx
        0x45, 0x31, 0xd2, // xor r10d, r10d
        0x45, 0x31, 0xc0, // xor r8d, r8d
        0x45, 0x31, 0xc9, // xor r9d, r9d
        0x0f, 0x05, // syscall
        0xf7, 0xd8, // neg eax
        0x89, 0xc7, // mov edi, eax
        0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
        0x0f, 0x05, // syscall
    ]);
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    for word in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

fn install_probe(root: &Path, name: &str, nr: u32) {
    let path = root.join("bin").join(name);
    std::fs::write(&path, syscall_probe(nr)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_probe_reports_errno() {
    // On the host, unfiltered: getpid succeeds (exit = low byte of -pid, anything)
    // and io_uring_setup(0, NULL) fails with EINVAL or EFAULT, not EPERM.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    install_probe(dir.path(), "uring", libc::SYS_io_uring_setup as u32);
    let st = std::process::Command::new(dir.path().join("bin/uring"))
        .status()
        .unwrap();
    assert!(
        matches!(st.code(), Some(c) if c == libc::EINVAL || c == libc::EFAULT),
        "{st}"
    );
}

#[test]
fn denied_calls_get_eperm_inside_a_zone() {
    require_root();
    let r = busybox_rootfs();
    let calls: [(&str, i64); 10] = [
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        // x32's getpid: harmless, yet refused because it is x32.
        ("x32_getpid", 0x4000_0000 | libc::SYS_getpid),
    ];
    let mut script = String::from("grep Seccomp: /proc/self/status; ");
    for (name, nr) in calls {
        install_probe(r.path(), name, nr as u32);
        script.push_str(&format!("/bin/{name}; echo {name}=$?; "));
    }
    let out = sh(r.path(), &[], &script);
    assert!(out.contains("Seccomp:\t2"), "no filter installed: {out}");
    for (name, _) in calls {
        assert!(
            out.contains(&format!("{name}={}\n", libc::EPERM)),
            "{name} not refused with EPERM: {out}"
        );
    }
}
