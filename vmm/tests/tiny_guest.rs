//! Tiny hand-assembled 64-bit guests on this machine's /dev/kvm: they drive the serial
//! port, the i8042 reset line, the ACPI power-off register, unmapped MMIO, and fault.
//! Each asserts what the VMM observed. /dev/kvm missing is a failure, not a skip.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::GuestExit;
use vmm::machine::Machine;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const ENTRY: u64 = 0x1000;

/// `mov dx, 0x3f8; mov al, c; out dx, al` for each byte.
fn print(s: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for c in s {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfe]; // out 0x64,0xfe; hlt; jmp $
                                                                  // mov ax, SLP_TYP=5|SLP_EN; mov dx, 0x604; out dx, ax; jmp $
const POWER_OFF: &[u8] = &[
    0x66, 0xb8, 0x00, 0x34, 0x66, 0xba, 0x04, 0x06, 0x66, 0xef, 0xeb, 0xfe,
];

fn run(code: &[u8]) -> (GuestExit, String) {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: these tests need KVM (load kvm / kvm_pvm)"
    );
    let out = Captured::default();
    let vm = Machine::new(64 << 20, 1, Box::new(out.clone()), Instant::now())
        .unwrap_or_else(|e| panic!("building the VM: {e}"));
    vm.mem().write_slice(code, GuestAddress(ENTRY)).unwrap();
    let running = vm.start(ENTRY).unwrap();
    let watchdog = running.exit_signal();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        watchdog.exit(GuestExit::Crash(
            "test watchdog: guest did not stop in 20 s".into(),
        ));
    });
    let why = running.wait();
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    (why, text)
}

#[test]
fn serial_output_then_i8042_reset() {
    let mut code = print(b"Hi from the guest\n");
    code.extend_from_slice(RESET);
    let (why, out) = run(&code);
    assert_eq!(out, "Hi from the guest\n");
    assert_eq!(why, GuestExit::Reset);
}

#[test]
fn acpi_power_off() {
    let mut code = print(b"bye\n");
    code.extend_from_slice(POWER_OFF);
    let (why, out) = run(&code);
    assert_eq!(out, "bye\n");
    assert_eq!(why, GuestExit::PowerOff);
}

#[test]
fn unmapped_mmio_reads_all_ones_and_guest_goes_on() {
    // mov rax, 0x3000_0000 (no RAM there in a 64 MiB guest, but inside the boot
    // identity map); mov byte [rax], 1; mov bl, [rax]; then print bl.
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&0x3000_0000u64.to_le_bytes());
    code.extend_from_slice(&[0xc6, 0x00, 0x01, 0x8a, 0x18]);
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0x88, 0xd8, 0xee]); // mov al, bl; out
    code.extend_from_slice(&print(b"\n"));
    code.extend_from_slice(POWER_OFF);
    let (why, out) = run(&code);
    assert_eq!(
        out, "\u{fffd}\n",
        "the read must see all ones (0xff, lossy-decoded)"
    );
    assert_eq!(why, GuestExit::PowerOff);
}

#[test]
fn triple_fault_ends_the_guest_cleanly() {
    // ud2 with an IDT that cannot deliver it: #UD -> #GP -> #DF -> shutdown.
    let (why, out) = run(&[0x0f, 0x0b]);
    assert_eq!(out, "");
    assert_eq!(why, GuestExit::Reset);
}

#[test]
fn boot_marker_is_recorded() {
    // mov al, 42; out 0x440 (via dx); then power off.
    let code = [&[0xb0, 42, 0x66, 0xba, 0x40, 0x04, 0xee][..], POWER_OFF].concat();
    let out = Captured::default();
    let vm = Machine::new(64 << 20, 1, Box::new(out), Instant::now()).expect("VM");
    vm.mem().write_slice(&code, GuestAddress(ENTRY)).unwrap();
    let running = vm.start(ENTRY).unwrap();
    let marker = running.marker.clone();
    assert_eq!(running.wait(), GuestExit::PowerOff);
    let hits = &marker.lock().unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, 42);
}
