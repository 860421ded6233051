//! One thread per vCPU: run, dispatch exits to the buses, end the guest on reset,
//! shutdown or KVM failure. Guest behaviour never panics this thread.

use crate::devices::{Bus, ExitSignal, GuestExit};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Signal used to kick vCPU threads out of `KVM_RUN` when the VM stops.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler: its only job is making `KVM_RUN` return `EINTR`.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
}

/// What a vCPU thread needs.
pub struct VcpuRunner {
    /// vCPU index.
    pub id: u8,
    /// The vCPU.
    pub fd: VcpuFd,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Ends the guest.
    pub exit: ExitSignal,
    /// Set when the VM is stopping: leave the loop at the next exit.
    pub stop: Arc<AtomicBool>,
    /// Seccomp filter to install on this thread first.
    pub filter: Option<Arc<seccompiler::BpfProgram>>,
}

/// Caps the log lines one vCPU writes about a misbehaving guest.
struct Complaints(u32);

impl Complaints {
    fn note(&mut self, id: u8, msg: std::fmt::Arguments) {
        self.0 += 1;
        if self.0 <= 16 {
            log::warn!("vcpu{id}: {msg}");
        } else if self.0 == 17 {
            log::warn!("vcpu{id}: further unhandled accesses are not logged");
        }
    }
}

impl VcpuRunner {
    /// Runs until the guest stops or the VM is stopping.
    pub fn run(mut self) {
        let mut complaints = Complaints(0);
        let id = self.id;
        if let Some(filter) = &self.filter {
            if let Err(e) = crate::jail::apply_this_thread(filter) {
                self.exit.exit(GuestExit::Crash(format!("vcpu{id}: {e}")));
                return;
            }
        }
        while !self.stop.load(Ordering::Acquire) {
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    if !self.pio.read(u64::from(port), data) {
                        data.fill(0xff);
                    }
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    // Unclaimed writes (port 0x80 delays, probes for absent ISA
                    // devices) are normal for a PC guest: dropped silently.
                    self.pio.write(u64::from(port), data);
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !self.mmio.read(addr, data) {
                        complaints.note(id, format_args!("read of unmapped MMIO {addr:#x}"));
                        data.fill(0xff);
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    if !self.mmio.write(addr, data) {
                        complaints.note(id, format_args!("write to unmapped MMIO {addr:#x}"));
                    }
                }
                Ok(VcpuExit::Hlt) => {
                    // With the in-kernel LAPIC, HLT only exits when nothing can wake
                    // this vCPU again.
                    log::info!("vcpu{id}: halted for good");
                    self.exit.exit(GuestExit::PowerOff);
                    return;
                }
                Ok(VcpuExit::Shutdown) => {
                    let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
                    log::warn!(
                        "vcpu{id}: triple fault (shutdown) at rip {rip:#x}: treating it as a reset"
                    );
                    self.exit.exit(GuestExit::Reset);
                    return;
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    let why = match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => GuestExit::PowerOff,
                        kvm_bindings::KVM_SYSTEM_EVENT_RESET => GuestExit::Reset,
                        other => GuestExit::Crash(format!("vcpu{id}: system event {other}")),
                    };
                    self.exit.exit(why);
                    return;
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    self.exit.exit(GuestExit::Crash(format!(
                        "vcpu{id}: KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                    )));
                    return;
                }
                Ok(VcpuExit::InternalError) => {
                    self.exit.exit(GuestExit::Crash(format!(
                        "vcpu{id}: KVM internal error (emulation failure?)"
                    )));
                    return;
                }
                Ok(other) => {
                    complaints.note(id, format_args!("unexpected exit {other:?}"));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    self.exit
                        .exit(GuestExit::Crash(format!("vcpu{id}: KVM_RUN failed: {e}")));
                    return;
                }
            }
        }
    }
}
