//! Device access for an instance's cgroup: every device denied but an allow list, as
//! runc, crun and youki do it. cgroup v1 has the `devices` controller
//! (`devices.deny` / `devices.allow`); cgroup v2 has no controller for it, only a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup, which the kernel runs
//! on every open and mknod of a device node by a task in it (crun's `ebpf.c`, youki's
//! `libcgroups/src/v2/devices`): we assemble the same kind of program here.
//!
//! The rules only ever allow reading and writing; mknod is refused on both versions
//! (an instance in a user namespace cannot mknod anyway, this keeps it so for one
//! that is not).

// bpf(2) has no safe wrapper in the crates we link.
#![allow(unsafe_code)]

use super::{CgroupError, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (`c`).
    Char,
    /// A block device (`b`).
    Block,
}

/// One allowed device (read and write, no mknod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Character or block.
    pub kind: DeviceKind,
    /// The major number.
    pub major: u32,
    /// The minor number; `None` for every minor of `major`.
    pub minor: Option<u32>,
}

const fn char_dev(major: u32, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Char,
        major,
        minor,
    }
}

/// The devices a container may use (runc's default list without mknod): null, zero,
/// full, random, urandom, tty, console, ptmx and the pty slaves (136:*, which also
/// covers a console or metadata tty that is a host pty).
pub const STANDARD_DEVICES: [DeviceRule; 9] = [
    char_dev(1, Some(3)),
    char_dev(1, Some(5)),
    char_dev(1, Some(7)),
    char_dev(1, Some(8)),
    char_dev(1, Some(9)),
    char_dev(5, Some(0)),
    char_dev(5, Some(1)),
    char_dev(5, Some(2)),
    char_dev(136, None),
];

impl DeviceRule {
    /// The rule in `devices.allow` syntax: `c 1:3 rw`, `c 136:* rw`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let minor = self.minor.map_or("*".to_string(), |m| m.to_string());
        format!("{kind} {}:{minor} rw", self.major)
    }
}

/// Restricts the v1 devices cgroup `dir` to `rules`: deny everything, then allow each.
pub(super) fn restrict_v1(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    super::write_file(dir, "devices.deny", "a")?;
    for rule in rules {
        super::write_file(dir, "devices.allow", &rule.v1_line())?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, access_type =
// access << 16 | type.
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;
const DEVCG_ACC_MKNOD: i32 = 1;

/// The program: r2 = type, r3 = access, r4 = major, r5 = minor; mknod -> deny; each
/// rule that matches -> allow; otherwise deny.
fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_MOV_X, 3, 2, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
        insn(ALU32_AND_K, 3, 0, 0, DEVCG_ACC_MKNOD),
    ];
    // Jump to the final deny: patched once its position is known.
    let mknod_jump = p.len();
    p.push(insn(JMP_JNE_K, 3, 0, 0, 0));
    for rule in rules {
        let kind = match rule.kind {
            DeviceKind::Char => DEVCG_DEV_CHAR,
            DeviceKind::Block => DEVCG_DEV_BLOCK,
        };
        let mut checks = vec![(2u8, kind), (4, rule.major as i32)];
        if let Some(minor) = rule.minor {
            checks.push((5, minor as i32));
        }
        // Each failed check skips the rest of this rule: the remaining checks and the
        // two instructions of "allow".
        let n = checks.len();
        for (i, (reg, value)) in checks.into_iter().enumerate() {
            let skip = (n - i - 1 + 2) as i16;
            p.push(insn(JMP_JNE_K, reg, 0, skip, value));
        }
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    let deny = p.len();
    p[mknod_jump].off = (deny - mknod_jump - 1) as i16;
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands, program and attach types.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of union bpf_attr
    // and its size is passed; the kernel zero-extends a shorter attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Restricts the v2 cgroup `dir` to `rules` with a device program attached without
/// `BPF_F_ALLOW_OVERRIDE` or `BPF_F_ALLOW_MULTI`: nothing below `dir` (a delegated
/// sub-cgroup) can attach a program of its own to widen it.
pub(super) fn restrict_v2(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let err = |reason: String| CgroupError {
        path: dir.to_path_buf(),
        reason,
    };
    let insns = program(rules);
    let license = b"GPL\0";
    let mut log = vec![0u8; 16 * 1024];
    let mut name = [0u8; 16];
    name[..7].copy_from_slice(b"devices");
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let prog = bpf(BPF_PROG_LOAD, &mut load).map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        err(format!(
            "loading the device program: {e}; verifier: {}",
            text.trim_end_matches('\0').trim()
        ))
    })?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let cgroup = std::fs::File::open(dir).map_err(|e| err(format!("opening: {e}")))?;
    let mut attach = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach)
        .map_err(|e| err(format!("attaching the device program: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines_name_kind_numbers_and_rw() {
        assert_eq!(STANDARD_DEVICES[0].v1_line(), "c 1:3 rw");
        assert_eq!(STANDARD_DEVICES[8].v1_line(), "c 136:* rw");
        let b = DeviceRule {
            kind: DeviceKind::Block,
            major: 7,
            minor: Some(0),
        };
        assert_eq!(b.v1_line(), "b 7:0 rw");
    }

    /// A tiny interpreter of the instructions `program` emits, to check the jumps
    /// without a kernel (the kernel's verifier and behaviour are tested in
    /// tests/devices.rs).
    fn run(p: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU32_MOV_X => r[dst] = r[src] & 0xffff_ffff,
                ALU32_AND_K => r[dst] = (r[dst] & i.imm as u32 as u64) & 0xffff_ffff,
                ALU32_RSH_K => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => {
                    pc = (pc as i64 + i64::from(i.off)) as usize
                }
                JMP_JNE_K => {}
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn program_allows_the_listed_devices_only_and_never_mknod() {
        let p = program(&STANDARD_DEVICES);
        let rw = |kind: u32| (6 << 16) | kind;
        assert_eq!(run(&p, rw(2), 1, 3), 1, "null");
        assert_eq!(run(&p, rw(2), 1, 9), 1, "urandom");
        assert_eq!(run(&p, rw(2), 136, 42), 1, "a pty slave");
        assert_eq!(run(&p, rw(2), 1, 11), 0, "kmsg");
        assert_eq!(run(&p, rw(2), 1, 1), 0, "mem");
        assert_eq!(run(&p, rw(1), 1, 3), 0, "block 1:3");
        assert_eq!(run(&p, rw(2), 10, 200), 0, "tun");
        assert_eq!(run(&p, (1 << 16) | 2, 1, 3), 0, "mknod of null");
        assert_eq!(run(&program(&[]), rw(2), 1, 3), 0, "empty list");
    }
}
