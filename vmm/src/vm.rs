//! One guest: the KVM VM, its memory, in-kernel irqchip and PIT, the legacy devices,
//! and the vCPU threads.

use crate::arch::{layout, regs};
use crate::devices::{
    bus::{lock, SharedDevice},
    i8042::I8042,
    marker::{BootMarker, MARKER_PORT},
    pm::PowerManagement,
    serial::{SerialDevice, COM1_IRQ, COM1_PORT},
    Bus, BusDevice, ExitSignal, GuestExit,
};
use crate::vcpu::{self, VcpuRunner};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

/// Why the VM could not be built or started.
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
    /// vCPU register setup.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// Two devices on one address.
    #[error(transparent)]
    Bus(#[from] crate::devices::bus::OverlapError),
    /// An OS call (eventfd, thread, signal) failed.
    #[error("{what}: {source}")]
    Os {
        /// The step.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn os_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Os { what, source }
}

/// A built VM whose vCPUs have not started yet.
pub struct Vm {
    kvm: Kvm,
    /// The VM file descriptor (shared with devices that inject interrupts).
    pub fd: Arc<VmFd>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// Guest memory size in bytes.
    pub mem_size: u64,
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// ACPI power management (power button).
    pub pm: Arc<Mutex<PowerManagement>>,
    /// Boot marker port.
    pub marker: Arc<Mutex<BootMarker>>,
    exit: ExitSignal,
    exit_rx: Receiver<GuestExit>,
    vcpus: Vec<VcpuFd>,
}

/// A running VM: wait for it to end with [`RunningVm::wait`].
pub struct RunningVm {
    // Guest memory and the VM fd must outlive the vCPU threads: KVM keeps using the
    // mapping registered as guest RAM.
    _fd: Arc<VmFd>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    exit_rx: Receiver<GuestExit>,
    exit: ExitSignal,
    /// ACPI power management (power button).
    pub pm: Arc<Mutex<PowerManagement>>,
    /// COM1 (for feeding input).
    pub serial: Arc<Mutex<SerialDevice>>,
    /// Boot marker hits.
    pub marker: Arc<Mutex<BootMarker>>,
}

impl Vm {
    /// Creates the VM: `mem_size` bytes of RAM, `vcpus` vCPUs, irqchip, PIT, COM1
    /// writing to `serial_out`, i8042, PM block, boot marker. `started` is when the
    /// VMM process started (for the boot marker).
    pub fn new(
        mem_size: u64,
        vcpus: u8,
        serial_out: Box<dyn Write + Send>,
        started: Instant,
    ) -> Result<Vm, VmError> {
        if vcpus == 0 {
            return Err(VmError::Config("a guest needs at least one vCPU".into()));
        }
        if mem_size < (16 << 20) || !mem_size.is_multiple_of(4096) {
            return Err(VmError::Config(format!(
                "guest memory must be a multiple of 4 KiB and at least 16 MiB (got {mem_size})"
            )));
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

        let fd = Arc::new(fd);
        let (exit, exit_rx) = ExitSignal::new();
        let mut pio = Bus::new();

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(os_err("eventfd"))?;
        fd.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(kvm_err("register serial irqfd"))?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, serial_out)));
        pio.insert(serial.clone(), u64::from(COM1_PORT), 8)?;

        pio.insert(Arc::new(Mutex::new(I8042::new(exit.clone()))), 0x60, 5)?;
        pio.insert(Arc::new(Mutex::new(Zeros)), 0x70, 2)?; // CMOS: "nothing set"

        let sci_fd = fd.clone();
        let sci = Box::new(move |level: bool| {
            if let Err(e) = sci_fd.set_irq_line(crate::arch::acpi::SCI_IRQ, level) {
                log::warn!("raising the SCI: {e}");
            }
        });
        let pm = Arc::new(Mutex::new(PowerManagement::new(sci, exit.clone())));
        pio.insert(pm.clone(), u64::from(crate::arch::acpi::PM1A_EVT_PORT), 8)?;

        let marker = Arc::new(Mutex::new(BootMarker::new(started)));
        pio.insert(marker.clone(), u64::from(MARKER_PORT), 1)?;

        let mut cpus = Vec::with_capacity(vcpus.into());
        for id in 0..vcpus {
            let vcpu = fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("create vCPU"))?;
            let cpuid = regs::guest_cpuid(&kvm, id, vcpus)?;
            vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
            regs::setup_msrs(&vcpu)?;
            regs::setup_fpu(&vcpu)?;
            regs::setup_lint(&vcpu)?;
            cpus.push(vcpu);
        }

        Ok(Vm {
            kvm,
            fd,
            mem,
            mem_size,
            pio,
            mmio: Bus::new(),
            serial,
            pm,
            marker,
            exit,
            exit_rx,
            vcpus: cpus,
        })
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// A handle devices use to end the guest.
    pub fn exit_signal(&self) -> ExitSignal {
        self.exit.clone()
    }

    /// Puts a device on the port I/O bus.
    pub fn add_pio(&mut self, dev: SharedDevice, base: u16, len: u16) -> Result<(), VmError> {
        Ok(self.pio.insert(dev, u64::from(base), u64::from(len))?)
    }

    /// Puts every vCPU in long mode; the boot vCPU starts at `entry`, the others wait
    /// for the INIT/SIPI the kernel sends them (the in-kernel LAPIC handles it).
    pub fn start(self, entry: u64) -> Result<RunningVm, VmError> {
        vcpu::install_kick_handler().map_err(|e| VmError::Os {
            what: "installing the vCPU kick signal",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let boot = &self.vcpus[0];
        regs::setup_long_mode(&self.mem, boot)?;
        regs::setup_regs(boot, entry)?;
        for vcpu in &self.vcpus[1..] {
            // Application processors start in the state INIT/SIPI leaves them in.
            let mp = kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
            };
            vcpu.set_mp_state(mp).map_err(kvm_err("set AP mp state"))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pio = Arc::new(self.pio);
        let mmio = Arc::new(self.mmio);
        let mut threads = Vec::new();
        for (id, fd) in self.vcpus.into_iter().enumerate() {
            let runner = VcpuRunner {
                id: id as u8,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: self.exit.clone(),
                stop: stop.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || runner.run())
                .map_err(os_err("spawning a vCPU thread"))?;
            threads.push(t);
        }
        Ok(RunningVm {
            _fd: self.fd,
            mem: self.mem,
            threads,
            stop,
            exit_rx: self.exit_rx,
            exit: self.exit,
            pm: self.pm,
            serial: self.serial,
            marker: self.marker,
        })
    }
}

impl RunningVm {
    /// A handle to end the guest from outside (forced stop, timeouts).
    pub fn exit_signal(&self) -> ExitSignal {
        self.exit.clone()
    }

    /// Waits for the guest to end, then stops and joins every vCPU thread.
    pub fn wait(self) -> GuestExit {
        let why = self
            .exit_rx
            .recv()
            .unwrap_or_else(|_| GuestExit::Crash("every vCPU thread is gone".into()));
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            // Kick until the thread notices: a signal landing just before it enters
            // KVM_RUN would otherwise be lost.
            while !t.is_finished() {
                let _ = t.kill(vcpu::kick_signal());
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
        why
    }

    /// Presses the ACPI power button; false if the guest does not listen for it.
    pub fn press_power_button(&self) -> bool {
        let mut pm = lock(&self.pm);
        pm.press_power_button();
        pm.power_button_enabled()
    }
}

/// A port range that reads as zero and ignores writes.
struct Zeros;

impl BusDevice for Zeros {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}
