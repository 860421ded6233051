//! The guest physical address map, in one place so every module agrees on it.
//!
//! ```text
//! 0x0000_0500  GDT              0x0000_7000  zero page (boot_params)
//! 0x0000_0520  IDT              0x0000_8ff0  initial stack
//! 0x0000_9000  PML4, PDPT, PD   0x0002_0000  kernel command line
//! 0x000e_0000  ACPI tables      0x0010_0000  kernel (bzImage protected-mode part)
//! 0x000f_0000  SMBIOS entry point and tables
//! 0xc000_0000  32-bit MMIO hole: PCI BARs, IOAPIC, LAPIC, up to 4 GiB
//! 0x1_0000_0000  RAM beyond what fits below the hole
//! ```

/// Global descriptor table.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (empty; the kernel installs its own).
pub const IDT_ADDR: u64 = 0x520;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Level-4 page table; PDPT and PD follow in the next pages.
pub const PML4_ADDR: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// Page directory (512 x 2 MiB pages: an identity map of the first GiB).
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line we place (the kernel's own limit is 2048 on x86).
pub const CMDLINE_MAX: usize = 2048;
/// Start of the extended BIOS data area: RAM below 1 MiB ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (RSDP first, where the kernel's legacy scan also finds it).
pub const ACPI_START: u64 = 0xe0000;
/// The SMBIOS entry point (the start of the F-segment the kernel scans), its
/// structure table after it. The ACPI tables below stay far smaller than 64 KiB.
pub const SMBIOS_START: u64 = 0xf0000;
/// End of the BIOS area.
pub const BIOS_END: u64 = 0x100000;
/// Where high memory (and the kernel) starts.
pub const HIMEM_START: u64 = 0x100000;
/// Start of the 32-bit MMIO hole; no RAM between here and 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// PCI BARs are handed out from here.
pub const PCI_MMIO_START: u64 = MMIO_HOLE_START;
/// Size of the window PCI BARs come from.
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;
/// The in-kernel IOAPIC.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// The local APICs.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// TSS area KVM needs on Intel (three pages below the IOAPIC window).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Identity map page KVM needs on Intel (just below the TSS).
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// The RAM ranges for a guest of `mem_size` bytes: split around the MMIO hole.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, mem_size - MMIO_HOLE_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
    }

    #[test]
    fn big_guest_skips_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![
                (0, MMIO_HOLE_START),
                (MMIO_HOLE_END, (4 << 30) - MMIO_HOLE_START)
            ]
        );
        let total: u64 = r.iter().map(|r| r.1).sum();
        assert_eq!(total, 4 << 30);
    }
}
