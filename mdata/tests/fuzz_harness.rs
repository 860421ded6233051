//! The stable side of the `mdata_session` fuzz target (fuzz/): its harness runs over
//! the seeds in fuzz/seeds-mdata/ and a few thousand deterministic pseudo-random
//! inputs, half of them mutated seeds, in every `cargo test`. A panic is a bug; the
//! seeds must reach the answering paths.

#[path = "../../fuzz/harness/mdata_session.rs"]
mod mdata_session;

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

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds-mdata");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn the_session_harness_answers_its_seeds_and_never_panics() {
    let seeds = seeds();
    for (path, data) in &seeds {
        let answers = mdata_session::run(data);
        assert!(answers > 0, "{}: no answer", path.display());
    }
    let put = seeds
        .iter()
        .find(|(p, _)| p.ends_with("put-get-keys-delete"))
        .unwrap();
    assert_eq!(
        mdata_session::run(&put.1),
        6,
        "NEGOTIATE and five frames answered"
    );
    let mut rng = Rng(0x5eed_3da7a);
    for i in 0..4000 {
        let input: Vec<u8> = if i % 2 == 0 {
            let len = rng.below(512);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut d = seeds[rng.below(seeds.len())].1.clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(d.len());
                if let Some(b) = d.get_mut(at) {
                    *b = match rng.below(4) {
                        0 => b'\n',
                        1 => b' ',
                        _ => rng.next() as u8,
                    };
                }
            }
            if rng.below(4) == 0 {
                d.truncate(rng.below(d.len()));
            }
            d
        };
        mdata_session::run(&input);
    }
}
