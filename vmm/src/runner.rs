//! Boots one guest from a [`VmConfig`] and runs it to the end: the part shared by the
//! foreground CLI and monitor mode.

use crate::arch::smbios::{self, SmbiosInfo};
use crate::arch::{acpi, boot};
use crate::config::VmConfig;
use crate::devices::bus::lock;
use crate::devices::legacy::pm::PowerManagement;
use crate::devices::legacy::serial::SerialDevice;
use crate::devices::{ExitSignal, GuestExit};
use crate::machine::{Machine, MachineError, RunningMachine};
use nix::sys::signal::{SigSet, Signal};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

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
    /// SMBIOS tables.
    #[error("writing SMBIOS tables: {0}")]
    Smbios(vm_memory::GuestMemoryError),
    /// The config's `com2_fd` is not an open descriptor this process may own.
    #[error("com2_fd {fd}: {reason}")]
    Com2Fd {
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        reason: String,
    },
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
    let smbios = SmbiosInfo::for_uuid(config.uuid.unwrap_or_default());
    smbios::write_tables(vm.mem(), &smbios).map_err(RunError::Smbios)?;
    let info = boot::load(
        vm.mem(),
        config.memory,
        &config.kernel,
        config.initrd.as_deref(),
        &config.cmdline,
        rsdp,
    )?;
    vm.attach_pci_devices(config)?;
    let com2 = match config.com2_fd {
        Some(fd) => Some(attach_com2(&mut vm, fd)?),
        None => None,
    };
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
        spawn_input("serial-in", input, running.serial.clone());
    }
    if let Some((input, com2)) = com2 {
        spawn_input("com2-in", input, com2);
    }
    spawn_stop_handler(&running, policy);
    Ok(running.wait())
}

/// Takes ownership of the inherited `fd` and attaches COM2 to it: guest output is
/// written to it, and what arrives on it is the guest's input (fed by the returned fd's
/// reader thread). Writes never block a vCPU: when the peer does not keep up, or is
/// gone, guest bytes are dropped, as a serial line without a listener drops them.
pub fn attach_com2(
    vm: &mut Machine,
    fd: i32,
) -> Result<(OwnedFd, Arc<Mutex<SerialDevice>>), RunError> {
    let bad = |reason: String| RunError::Com2Fd { fd, reason };
    let owned = crate::config::take_inherited(fd).map_err(bad)?;
    let out = owned.try_clone().map_err(|e| bad(e.to_string()))?;
    let com2 = vm.attach_com2(Box::new(DropWhenBusy(std::fs::File::from(out))))?;
    Ok((owned, com2))
}

/// A writer that never blocks and never fails: what cannot be written now is dropped.
struct DropWhenBusy(std::fs::File);

impl Write for DropWhenBusy {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(n) => return Ok(n),
                Err(_) => return Ok(buf.len()),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts a thread (named `name`) feeding what arrives on `input` to `serial`'s
/// receive FIFO, as fast as the guest drains it, until `input` ends. While the FIFO is
/// full it sleeps on the device's room event, signalled when the guest empties it.
pub fn spawn_input(name: &str, input: OwnedFd, serial: Arc<Mutex<SerialDevice>>) {
    let room_event = lock(&serial).room_event();
    let _ = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut file = std::fs::File::from(input);
            let mut buf = [0u8; 64];
            loop {
                // Reset before looking at the FIFO, so an emptying after the look is
                // not lost.
                let _ = room_event.read();
                let room = lock(&serial).input_room().min(buf.len());
                if room == 0 {
                    wait_room(&room_event);
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

/// Waits until the guest empties the FIFO; the timeout only bounds a wait on a guest
/// that has stopped reading.
fn wait_room(room: &EventFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: the eventfd outlives this call, which only polls it.
    let fd = unsafe { BorrowedFd::borrow_raw(room.as_raw_fd()) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(1000u16));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::BusDevice;

    /// The input thread refills the FIFO as soon as the guest empties it: a 640-byte
    /// answer needs ten refills, and each would wait out the one-second fallback if
    /// the emptying did not wake the thread.
    #[test]
    fn input_resumes_when_the_guest_empties_the_fifo() {
        let serial = SerialDevice::new(EventFd::new(0).unwrap(), Box::new(std::io::sink()));
        let serial = Arc::new(Mutex::new(serial.unwrap()));
        let (rx, tx) = nix::unistd::pipe().unwrap();
        spawn_input("test-in", rx, serial.clone());
        let answer: Vec<u8> = (0..640).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::File::from(tx).write_all(&answer).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < answer.len() && started.elapsed() < Duration::from_secs(5) {
            let mut s = lock(&serial);
            let mut b = [0u8];
            loop {
                s.read(5, &mut b);
                if b[0] & 1 == 0 {
                    break;
                }
                s.read(0, &mut b);
                got.push(b[0]);
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, answer);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "took {:?}",
            started.elapsed()
        );
    }
}
