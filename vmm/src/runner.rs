//! Boots one guest from a [`VmConfig`] and runs it to the end: the part shared by the
//! foreground CLI and instance mode.

use crate::arch::{acpi, boot};
use crate::config::VmConfig;
use crate::devices::bus::lock;
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::{ExitSignal, GuestExit};
use crate::machine::{Machine, MachineError, RunningMachine};
use nix::sys::signal::{SigSet, Signal};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a guest could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Building the VM or attaching its devices.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// Loading kernel/initrd.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Jail setup.
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    /// ACPI tables.
    #[error("writing ACPI tables: {0}")]
    Acpi(vm_memory::GuestMemoryError),
}

/// Where the serial console goes.
pub struct Console {
    /// Guest output.
    pub output: Box<dyn Write + Send>,
    /// Host input for the guest (stdin, a pty), if any.
    pub input: Option<OwnedFd>,
}

/// How the VMM confines itself once the guest's files are open.
#[derive(Debug, Clone, Copy)]
pub struct JailOptions {
    /// User to drop to.
    pub uid: u32,
    /// Group to drop to.
    pub gid: u32,
}

/// Options for how the VMM treats stop requests.
#[derive(Debug, Clone, Copy)]
pub struct StopPolicy {
    /// How long a guest gets to power off after the power button, before it is killed.
    pub grace: Duration,
}

/// Blocks the stop signals in the calling thread (and the threads it spawns after),
/// so [`run`]'s signal thread is the only one receiving them. Call first in `main`.
pub fn block_stop_signals() {
    let _ = stop_signals().thread_block();
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Boots `config` and waits for the guest to end. SIGTERM/SIGINT press the ACPI power
/// button; a second one, or `policy.grace` passing, stops the guest by force.
pub fn run(
    config: &VmConfig,
    console: Console,
    policy: StopPolicy,
    jail: Option<JailOptions>,
    started: Instant,
) -> Result<GuestExit, RunError> {
    let mut vm = Machine::new(config.memory, config.vcpus, console.output, started)?;
    let rsdp = acpi::write_tables(vm.mem(), config.vcpus).map_err(RunError::Acpi)?;
    let info = boot::load(
        vm.mem(),
        config.memory,
        &config.kernel,
        config.initrd.as_deref(),
        &config.cmdline,
        rsdp,
    )?;
    vm.attach_pci_devices(config)?;
    if let Some(j) = jail {
        // Every file the guest needs is open: from here on, no path is visible.
        crate::jail::lock_down(j.uid, j.gid)?;
        crate::jail::apply_all_threads(&crate::jail::vmm_filter()?)?;
        vm.set_vcpu_filter(crate::jail::vcpu_filter()?);
    }
    let running = vm.start(info.entry)?;
    log::info!(
        "vCPUs entering the guest {} us after process start",
        started.elapsed().as_micros()
    );
    if let Some(input) = console.input {
        spawn_input(input, running.serial.clone());
    }
    spawn_stop_handler(&running, policy);
    Ok(running.wait())
}

fn spawn_input(input: OwnedFd, serial: Arc<Mutex<SerialDevice>>) {
    let _ = std::thread::Builder::new()
        .name("serial-in".into())
        .spawn(move || {
            let mut file = std::fs::File::from(input);
            let mut buf = [0u8; 64];
            loop {
                let room = lock(&serial).input_room().min(buf.len());
                if room == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                match file.read(&mut buf[..room]) {
                    Ok(0) => return,
                    Ok(n) => {
                        lock(&serial).enqueue_input(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        wait_readable(&file);
                    }
                    Err(e) => {
                        log::warn!("console input: {e}");
                        return;
                    }
                }
            }
        });
}

fn wait_readable(file: &std::fs::File) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(200u16));
}

fn spawn_stop_handler(running: &RunningMachine, policy: StopPolicy) {
    let pm = running.pm.clone();
    let exit = running.exit_signal();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = stop_signals();
            let mut asked = false;
            while let Ok(sig) = set.wait() {
                if asked {
                    log::warn!("{sig}: second stop request, stopping the guest now");
                    exit.exit(GuestExit::Stopped);
                    return;
                }
                asked = true;
                request_power_off(&pm, &exit, policy.grace, &format!("{sig}"));
            }
        });
}

/// Presses the power button and arms a timer that stops the guest by force once the
/// grace period is over.
pub fn request_power_off(
    pm: &Arc<Mutex<PowerManagement>>,
    exit: &ExitSignal,
    grace: Duration,
    why: &str,
) {
    let listening = {
        let mut pm = lock(pm);
        pm.press_power_button();
        pm.power_button_enabled()
    };
    if !listening {
        log::warn!("{why}: the guest does not listen to the ACPI power button; stopping it now");
        exit.exit(GuestExit::Stopped);
        return;
    }
    log::info!("{why}: pressed the power button; the guest has {grace:?} to power off");
    let exit = exit.clone();
    let _ = std::thread::Builder::new()
        .name("stop-timer".into())
        .spawn(move || {
            std::thread::sleep(grace);
            log::warn!("the guest did not power off within {grace:?}; stopping it");
            exit.exit(GuestExit::Stopped);
        });
}
