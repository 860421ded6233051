//! The stable side of the VMM's fuzz targets (fuzz/ at the repository root): every
//! harness (fuzz/harness/vmm/) runs over its seeds (fuzz/seeds-<target>/) and a few
//! thousand deterministic pseudo-random inputs, half of them mutated seeds. A panic is a bug; the seeds must reach the deep paths
//! (a kernel out of each disk image seed).

#[path = "../../fuzz/harness/vmm/mod.rs"]
mod harness;

use std::path::PathBuf;

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/seeds-{target}"));
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// `count` inputs: random bytes up to `max_len`, or a seed with a few bytes changed,
/// cut or extended.
fn inputs(seed: u64, count: usize, max_len: usize, seeds: &[(PathBuf, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            if i % 2 == 0 {
                let len = rng.below(max_len as u64) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut d = seeds[rng.below(seeds.len() as u64) as usize].1.clone();
                for _ in 0..1 + rng.below(16) {
                    let at = rng.below(d.len() as u64) as usize;
                    if let Some(b) = d.get_mut(at) {
                        *b = match rng.below(4) {
                            0 => 0xff,
                            1 => 0,
                            _ => rng.next() as u8,
                        };
                    }
                }
                match rng.below(8) {
                    0 => d.truncate(rng.below(d.len() as u64) as usize),
                    1 => d.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                    _ => {}
                }
                d
            }
        })
        .collect()
}

#[test]
fn virtio_net_harness_never_panics_and_its_seeds_move_frames() {
    let seeds = seeds("virtio_net");
    for (path, s) in &seeds {
        let (rx, tx) = harness::virtio_net::run(s);
        // The seeds carry a frame each way: both rings move.
        assert!(rx > 0 && tx > 0, "{}: rx {rx} tx {tx}", path.display());
    }
    for d in inputs(0x7e7_0001, 2000, 4096, &seeds) {
        harness::virtio_net::run(&d);
    }
}

#[test]
fn virtio_queue_harness_never_panics_and_its_seed_completes_three_requests() {
    let seeds = seeds("virtio_queue");
    for (path, s) in &seeds {
        // A read, a write and a flush: all three used, each with status OK.
        assert_eq!(
            harness::virtio_queue::run(s),
            (3, [0; 3]),
            "{}",
            path.display()
        );
    }
    for d in inputs(0xb1c_0004, 2000, 8192, &seeds) {
        harness::virtio_queue::run(&d);
    }
}

#[test]
fn pci_config_harness_never_panics() {
    let seeds = seeds("pci_config");
    for (_, s) in &seeds {
        harness::pci_config::run(s);
    }
    for d in inputs(0x9c1_0002, 4000, 512, &seeds) {
        harness::pci_config::run(&d);
    }
}

#[test]
fn boot_disk_harness_never_panics_and_its_seeds_boot() {
    let seeds = seeds("boot_disk");
    for (path, s) in &seeds {
        let ok = harness::boot_disk::run(s);
        let name = path.file_name().unwrap().to_string_lossy();
        let should = name.ends_with("ext4") || name == "frames-ok";
        assert_eq!(ok, should, "seed {name}");
    }
    let mut found = 0;
    for d in inputs(0xb007_0003, 2000, 2048, &seeds) {
        found += usize::from(harness::boot_disk::run(&d));
    }
    eprintln!("{found} of 2000 inputs gave a kernel");
}
