//! The KVM VM: guest memory registered with KVM, the in-kernel irqchip and PIT, and
//! vCPUs set up for the boot protocol. Devices are not here: the
//! [`crate::device_manager`] attaches them and wires their interrupts to this VM.

use crate::arch::{layout, regs};
use crate::devices::interrupt::{MsiMessage, MsiSender};
use kvm_bindings::{kvm_msi, kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::sync::Arc;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why the VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` missing or unusable.
    #[error("opening /dev/kvm: {0} (is the kvm module loaded and /dev/kvm accessible?)")]
    OpenKvm(kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("allocating {size} bytes of guest memory: {reason}")]
    Memory {
        /// Requested size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// A memory size KVM and the boot protocol cannot use.
    #[error("guest memory must be a multiple of 4 KiB and at least 16 MiB (got {0})")]
    MemorySize(u64),
    /// No vCPU asked for.
    #[error("a guest needs at least one vCPU")]
    NoVcpus,
    /// vCPU register setup.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
}

/// Maps a failed KVM ioctl to [`VmError::Kvm`] naming the step.
pub fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A KVM VM with its guest memory; vCPUs are created by [`Vm::create_vcpus`].
pub struct Vm {
    kvm: Kvm,
    /// The VM file descriptor (shared with devices that inject interrupts).
    pub fd: Arc<VmFd>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// Guest memory size in bytes.
    pub mem_size: u64,
}

impl Vm {
    /// Creates the VM with `mem_size` bytes of RAM, the in-kernel irqchip and PIT.
    pub fn new(mem_size: u64) -> Result<Vm, VmError> {
        if mem_size < (16 << 20) || !mem_size.is_multiple_of(4096) {
            return Err(VmError::MemorySize(mem_size));
        }
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(kvm_err("create VM"))?;
        fd.set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(kvm_err("set TSS address"))?;
        fd.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("set identity map address"))?;
        fd.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("create PIT"))?;

        let ranges: Vec<(GuestAddress, usize)> = layout::ram_ranges(mem_size)
            .into_iter()
            .map(|(a, s)| (GuestAddress(a), s as usize))
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(|e| VmError::Memory {
            size: mem_size,
            reason: e.to_string(),
        })?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| VmError::Memory {
                    size: mem_size,
                    reason: e.to_string(),
                })?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which this Vm keeps
            // (and every clone of it keeps) for as long as the VM fd exists; the slot
            // ranges do not overlap.
            unsafe { fd.set_user_memory_region(r) }.map_err(kvm_err("set memory region"))?;
        }
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
            mem,
            mem_size,
        })
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Creates `count` vCPUs with their CPUID, MSRs, FPU and local APIC set up.
    pub fn create_vcpus(&self, count: u8) -> Result<Vec<VcpuFd>, VmError> {
        if count == 0 {
            return Err(VmError::NoVcpus);
        }
        let mut cpus = Vec::with_capacity(count.into());
        for id in 0..count {
            let vcpu = self
                .fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("create vCPU"))?;
            let cpuid = regs::guest_cpuid(&self.kvm, id, count)?;
            vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
            regs::setup_msrs(&vcpu)?;
            regs::setup_fpu(&vcpu)?;
            regs::setup_lint(&vcpu)?;
            cpus.push(vcpu);
        }
        Ok(cpus)
    }
}

/// KVM injects the MSIs of the VM's PCI devices.
impl MsiSender for VmFd {
    fn send_msi(&self, msg: MsiMessage) -> std::io::Result<()> {
        let msi = kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        self.signal_msi(msi)
            .map(drop)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}
