//! Tiny hand-assembled guests the vmm tests boot: an ELF "kernel" and the few
//! instructions they run.

#![allow(dead_code)] // each test file uses a different part

/// Where [`tiny_elf`] loads its code, and its entry point.
pub const LOAD: u64 = 0x10_0000;

/// An ELF64 executable with one PT_LOAD segment of `code` at 1 MiB.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&LOAD.to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    let offset = 0x1000u64;
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [
        offset,
        LOAD,
        LOAD,
        code.len() as u64,
        code.len() as u64,
        0x1000,
    ] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.resize(offset as usize, 0);
    e.extend_from_slice(code);
    e
}

/// `mov dx, 0x3f8; mov al, c; out dx, al` for each byte: `s` on the serial console.
pub fn print(s: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for c in s {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

/// `cli; hlt; jmp` back to the `hlt`: the guest stays up, idle.
pub const HALT_FOREVER: &[u8] = &[0xfa, 0xf4, 0xeb, 0xfd];
/// mov ax, SLP_TYP=5|SLP_EN; mov dx, 0x604; out dx, ax; jmp $: ACPI power-off.
pub const POWER_OFF: &[u8] = &[
    0x66, 0xb8, 0x00, 0x34, 0x66, 0xba, 0x04, 0x06, 0x66, 0xef, 0xeb, 0xfe,
];
