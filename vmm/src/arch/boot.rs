//! Direct kernel boot: load a bzImage or an ELF vmlinux, the initrd and the command
//! line, and fill the zero page (setup header, e820 map, RSDP address).

use super::layout::*;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Why the kernel, initrd or command line could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Neither a bzImage nor an ELF kernel.
    #[error("{path}: not a bzImage or ELF vmlinux ({reason})")]
    BadKernel {
        /// The file.
        path: PathBuf,
        /// What the loaders said.
        reason: String,
    },
    /// The initrd does not fit below the MMIO hole beside the kernel.
    #[error(
        "initrd {path} ({size} bytes) does not fit in guest memory; give the guest more memory"
    )]
    InitrdTooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Command line too long.
    #[error("kernel command line is {0} bytes; at most {CMDLINE_MAX} fit")]
    CmdlineTooLong(usize),
    /// Writing to guest memory failed.
    #[error("writing boot data to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// Where the guest starts and what it was given.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// 64-bit entry point.
    pub entry: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_owned(),
        source,
    }
}

fn is_bzimage(file: &mut File) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0x202))?;
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(n == 4 && u32::from_le_bytes(magic) == KERNEL_HDR_MAGIC)
}

/// Loads `kernel` (+ `initrd`) into `mem` of `mem_size` bytes, writes the command line
/// and zero page; `rsdp` is the ACPI root pointer.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    rsdp: u64,
) -> Result<BootInfo, BootError> {
    let mut file = File::open(kernel).map_err(io(kernel))?;
    let bz = is_bzimage(&mut file).map_err(io(kernel))?;
    let (entry, kernel_end, header) = if bz {
        let r =
            BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|e| {
                BootError::BadKernel {
                    path: kernel.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        // The 64-bit boot protocol enters 0x200 past the protected-mode code.
        (r.kernel_load.0 + 0x200, r.kernel_end, r.setup_header)
    } else {
        let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|e| {
            BootError::BadKernel {
                path: kernel.to_owned(),
                reason: e.to_string(),
            }
        })?;
        (r.kernel_load.0, r.kernel_end, None)
    };

    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;

    if cmdline.len() + 1 > CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong(cmdline.len()));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline.len() as u32;

    let low_end = mem_size.min(MMIO_HOLE_START);
    if let Some(initrd) = initrd {
        let mut f = File::open(initrd).map_err(io(initrd))?;
        let size = f.metadata().map_err(io(initrd))?.len();
        let max = if params.hdr.initrd_addr_max != 0 {
            u64::from(params.hdr.initrd_addr_max).min(low_end - 1) + 1
        } else {
            low_end
        };
        let addr = max.saturating_sub(size) & !0xfff;
        if addr < kernel_end.max(HIMEM_START) {
            return Err(BootError::InitrdTooBig {
                path: initrd.to_owned(),
                size,
            });
        }
        mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
            .map_err(BootError::Memory)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let e820 = e820_map(mem_size);
    for (i, (addr, size, kind)) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    params.acpi_rsdp_addr = rsdp;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))?;
    Ok(BootInfo { entry })
}

/// The e820 map for a guest with `mem_size` bytes of RAM: low RAM, the BIOS area
/// (holding the ACPI tables) reserved, RAM from 1 MiB, RAM above the MMIO hole.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (ACPI_START, BIOS_END - ACPI_START, E820_RESERVED),
    ];
    let low_end = mem_size.min(MMIO_HOLE_START);
    map.push((HIMEM_START, low_end - HIMEM_START, E820_RAM));
    if mem_size > MMIO_HOLE_START {
        map.push((MMIO_HOLE_END, mem_size - MMIO_HOLE_START, E820_RAM));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_all_ram_once() {
        for size in [64u64 << 20, 256 << 20, 3 << 30, 5 << 30] {
            let ram: u64 = e820_map(size)
                .iter()
                .filter(|e| e.2 == E820_RAM)
                .map(|e| e.1)
                .sum();
            // The EBDA..1MiB gap is the only RAM not handed to the kernel.
            assert_eq!(ram, size - (HIMEM_START - EBDA_START), "size {size}");
        }
    }

    #[test]
    fn garbage_kernel_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-kernel");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let err = load(&mem, 64 << 20, &path, None, "", 0).unwrap_err();
        assert!(err.to_string().contains("not-a-kernel"), "{err}");
    }
}
