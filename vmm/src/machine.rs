//! One guest put together: the KVM [`Vm`], its vCPUs, and the devices the
//! [`DeviceManager`] attached. Started, it runs one thread per vCPU until the first
//! [`GuestExit`].

use crate::arch::regs;
use crate::config::VmConfig;
use crate::device_manager::legacy::LegacyDevices;
use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::devices::bus::lock;
use crate::devices::legacy::marker::BootMarker;
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::{ExitSignal, GuestExit};
use crate::vstate::vcpu::{self, VcpuRunner};
use crate::vstate::vm::{kvm_err, Vm, VmError};
use kvm_ioctls::{VcpuFd, VmFd};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::Killable;

/// Why the guest could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The KVM VM or its vCPUs.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Attaching a device.
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
    /// An OS call (thread, signal) failed.
    #[error("{what}: {source}")]
    Os {
        /// The step.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A built guest whose vCPUs have not started yet.
pub struct Machine {
    /// The KVM VM and guest memory.
    pub vm: Vm,
    /// The buses and the devices on them.
    pub devices: DeviceManager,
    exit: ExitSignal,
    exit_rx: Receiver<GuestExit>,
    vcpus: Vec<VcpuFd>,
    vcpu_filter: Option<Arc<seccompiler::BpfProgram>>,
}

/// A running guest: wait for it to end with [`RunningMachine::wait`].
pub struct RunningMachine {
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

impl Machine {
    /// Creates the guest: `mem_size` bytes of RAM, `vcpus` vCPUs, irqchip, PIT, COM1
    /// writing to `serial_out`, i8042, PM block, boot marker. `started` is when the
    /// VMM process started (for the boot marker).
    pub fn new(
        mem_size: u64,
        vcpus: u8,
        serial_out: Box<dyn Write + Send>,
        started: Instant,
    ) -> Result<Machine, MachineError> {
        if vcpus == 0 {
            return Err(VmError::NoVcpus.into());
        }
        let vm = Vm::new(mem_size)?;
        let (exit, exit_rx) = ExitSignal::new();
        let devices = DeviceManager::new(&vm, serial_out, exit.clone(), started)?;
        let vcpus = vm.create_vcpus(vcpus)?;
        Ok(Machine {
            vm,
            devices,
            exit,
            exit_rx,
            vcpus,
            vcpu_filter: None,
        })
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.vm.mem
    }

    /// Attaches the disks and interfaces of `config` on the PCI bus.
    pub fn attach_pci_devices(&mut self, config: &VmConfig) -> Result<(), MachineError> {
        self.devices
            .attach_pci(&self.vm, &config.disks, &config.nets)?;
        Ok(())
    }

    /// Attaches COM2 (0x2f8, IRQ 3), its output written to `out`; returns the device,
    /// to feed it input. Call before [`Machine::start`].
    pub fn attach_com2(
        &mut self,
        out: Box<dyn Write + Send>,
    ) -> Result<Arc<Mutex<SerialDevice>>, MachineError> {
        Ok(self.devices.attach_com2(&self.vm, out)?)
    }

    /// Seccomp filter each vCPU thread installs on itself before running the guest.
    pub fn set_vcpu_filter(&mut self, filter: seccompiler::BpfProgram) {
        self.vcpu_filter = Some(Arc::new(filter));
    }

    /// A handle devices use to end the guest.
    pub fn exit_signal(&self) -> ExitSignal {
        self.exit.clone()
    }

    /// Puts every vCPU in long mode; the boot vCPU starts at `entry`, the others wait
    /// for the INIT/SIPI the kernel sends them (the in-kernel LAPIC handles it).
    pub fn start(self, entry: u64) -> Result<RunningMachine, MachineError> {
        vcpu::install_kick_handler().map_err(|e| MachineError::Os {
            what: "installing the vCPU kick signal",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let boot = &self.vcpus[0];
        regs::setup_long_mode(&self.vm.mem, boot).map_err(VmError::from)?;
        regs::setup_regs(boot, entry).map_err(VmError::from)?;
        for vcpu in &self.vcpus[1..] {
            // Application processors start in the state INIT/SIPI leaves them in.
            let mp = kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
            };
            vcpu.set_mp_state(mp).map_err(kvm_err("set AP mp state"))?;
        }
        self.devices.start_io_threads()?;
        let stop = Arc::new(AtomicBool::new(false));
        let DeviceManager {
            pio, mmio, legacy, ..
        } = self.devices;
        let LegacyDevices { serial, pm, marker } = legacy;
        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);
        let mut threads = Vec::new();
        for (id, fd) in self.vcpus.into_iter().enumerate() {
            let runner = VcpuRunner {
                id: id as u8,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: self.exit.clone(),
                stop: stop.clone(),
                filter: self.vcpu_filter.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || runner.run())
                .map_err(|source| MachineError::Os {
                    what: "spawning a vCPU thread",
                    source,
                })?;
            threads.push(t);
        }
        Ok(RunningMachine {
            _fd: self.vm.fd,
            mem: self.vm.mem,
            threads,
            stop,
            exit_rx: self.exit_rx,
            exit: self.exit,
            pm,
            serial,
            marker,
        })
    }
}

impl RunningMachine {
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
