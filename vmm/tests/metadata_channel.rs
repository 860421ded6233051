//! The guest's COM2 (0x2f8, IRQ 3) as its metadata channel, on this machine's
//! /dev/kvm: a tiny guest sends a metadata request out of COM2, the monitor-side
//! `mdata` server answers over the socketpair, and the guest reads the answer back
//! from COM2's registers and copies it to COM1. /dev/kvm missing is a failure.

use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::GuestExit;
use vmm::machine::Machine;
use vmm::metadata::MetadataService;

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

/// `mov dx, 0x2f8` then `mov al, c; out dx, al` per byte: the request, out of COM2.
fn send_to_com2(s: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x02];
    for c in s {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

/// Polls COM2's line status (0x2fd) for data, reads it (0x2f8), writes it to COM1
/// (0x3f8), until a `.` has been copied; then powers off through ACPI.
const COPY_ANSWER_TO_COM1: &[u8] = &[
    0x66, 0xba, 0xfd, 0x02, // L: mov dx, 0x2fd
    0xec, //                    in al, dx
    0xa8, 0x01, //              test al, 1 (data ready)
    0x74, 0xf7, //              jz L
    0x66, 0xba, 0xf8, 0x02, //  mov dx, 0x2f8
    0xec, //                    in al, dx
    0x66, 0xba, 0xf8, 0x03, //  mov dx, 0x3f8
    0xee, //                    out dx, al
    0x3c, b'.', //              cmp al, '.'
    0x75, 0xe9, //              jne L
    // mov ax, SLP_TYP=5|SLP_EN; mov dx, 0x604; out dx, ax; jmp $
    0x66, 0xb8, 0x00, 0x34, 0x66, 0xba, 0x04, 0x06, 0x66, 0xef, 0xeb, 0xfe,
];

#[test]
fn a_guest_reads_its_metadata_through_com2() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: these tests need KVM (load kvm / kvm_pvm)"
    );
    let spec = spec::parse_str(
        "g.kdl",
        "hvm g { image \"debian-hvm@12\"; user-data \"from the monitor\"; }",
    )
    .unwrap()
    .remove(0);
    let dir = tempfile::tempdir().unwrap();
    let store = mdata::MetadataStore::open_spec(
        &dir.path().join("metadata.json"),
        &spec,
        "u-1",
        &[],
        mdata::Limits::default(),
    )
    .unwrap();
    let service = MetadataService::with_store("u-1", store);
    let guest_end = service.connect().unwrap();

    let console = Captured::default();
    let mut vm = Machine::new(64 << 20, 1, Box::new(console.clone()), Instant::now())
        .unwrap_or_else(|e| panic!("building the VM: {e}"));
    // As the child VMM does with the fd number its config names.
    let (input, com2) = vmm::runner::attach_com2(&mut vm, guest_end.into_raw_fd()).unwrap();
    let mut code = send_to_com2(b"GET user-data\n");
    code.extend_from_slice(COPY_ANSWER_TO_COM1);
    vm.mem().write_slice(&code, GuestAddress(ENTRY)).unwrap();
    let running = vm.start(ENTRY).unwrap();
    vmm::runner::spawn_input("com2-in", input, com2);
    let watchdog = running.exit_signal();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        watchdog.exit(GuestExit::Crash(
            "test watchdog: guest did not stop in 20 s".into(),
        ));
    });
    let why = running.wait();
    let out = String::from_utf8_lossy(&console.0.lock().unwrap()).into_owned();
    let shown: String = out.chars().take(200).collect();
    assert!(out == "SUCCESS\nfrom the monitor\n.", "COM1 got {shown:?}");
    assert_eq!(why, GuestExit::PowerOff);
}

#[test]
fn a_com2_fd_that_is_not_open_is_refused() {
    let mut vm = Machine::new(16 << 20, 1, Box::new(io::sink()), Instant::now()).unwrap();
    for fd in [1, 999_999] {
        let Err(e) = vmm::runner::attach_com2(&mut vm, fd) else {
            panic!("fd {fd} accepted");
        };
        assert!(e.to_string().starts_with(&format!("com2_fd {fd}: ")), "{e}");
    }
}
