#![cfg(feature = "kdl")]
//! A stable-Rust stand-in for the cargo-fuzz target (fuzz/): seeded random mutations
//! of the example manifests and of SmartOS payloads must never panic the parsers or
//! the renderers, and whatever parses must round-trip through `to_kdl`. Bounded to a
//! few seconds so it runs in every CI build.

use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: small, seeded, reproducible.
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

const TOKENS: &[&str] = &[
    "zone ",
    "hvm ",
    "{",
    "}",
    ";",
    "\"",
    "=",
    "#true",
    "#false",
    "#null",
    "/-",
    "//",
    "\n",
    "image ",
    "memory ",
    "nic ",
    "disk ",
    "boot=#true",
    "size=",
    "ip=",
    "gateway=",
    "tag=",
    "\"dhcp\"",
    "\"10.0.0.1/33\"",
    "-1",
    "1e99",
    "0x10",
    "\"99999999999T\"",
    "é",
    "\u{1F600}",
    "r#\"x\"#",
    "\"\"\"\n",
    "{\"brand\":",
    "\"kvm\"",
    "[",
    "]",
    ",",
    "\"nics\":",
    "null",
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 if at < bytes.len() => bytes[at] = rng.next() as u8,
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, t.iter().copied());
            }
            3 if !bytes.is_empty() => {
                // Duplicate a slice elsewhere (repeats properties, nests blocks).
                let from = rng.below(bytes.len());
                let end = (from + rng.below(64)).min(bytes.len());
                let chunk: Vec<u8> = bytes[from..end].to_vec();
                let at = at.min(bytes.len());
                bytes.splice(at..at, chunk);
            }
            _ => bytes.insert(at.min(bytes.len()), rng.next() as u8),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check(text: &str) {
    match spec::parse_str("m.kdl", text) {
        Ok(specs) => {
            for s in specs {
                let kdl = spec::to_kdl(&s);
                let mut back = spec::parse_str("r.kdl", &kdl).unwrap_or_else(|e| {
                    panic!("to_kdl output does not parse: {e}\n{kdl}\nfrom:\n{text}")
                });
                let mut back = back.remove(0);
                back.origin = s.origin.clone();
                assert_eq!(back, s, "round trip of\n{text}");
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(p.line >= 1 && p.col >= 1, "{p:?} in\n{text}");
            }
            let _ = e.render_plain();
            let _ = e.render_graphical(false);
        }
    }
    if let Ok(specs) = spec::smartos::from_payload(text) {
        for s in specs {
            assert!(
                spec::parse_str("p.kdl", &spec::to_kdl(&s)).is_ok(),
                "{text}"
            );
        }
    }
    let _ = spec::smartos::validate_update("kvm", text);
    let bases = spec::parse_str(
        "base.kdl",
        "zone z { image \"busybox@1.36\"; nic net0 tag=\"admin\" mac=\"02:00:00:00:00:01\"; }\n\
         hvm h { image \"debian-hvm@12\"; disk data size=\"1G\"; }",
    )
    .unwrap();
    for base in &bases {
        if let Ok(u) = spec::smartos::apply_update(base, text, Default::default()) {
            let kdl = spec::to_kdl(&u.spec);
            assert!(
                spec::parse_str("u.kdl", &kdl).is_ok(),
                "{kdl}\nfrom update\n{text}"
            );
        }
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds: Vec<String> = std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    seeds.push(
        r#"{"brand":"kvm","vcpus":2,"ram":512,"disks":[{"boot":true,"image_uuid":"71101322-43a5-11e1-8f01-cf2a3031a7f4"},{"size":1024}],"nics":[{"nic_tag":"admin","ip":"10.0.0.5","netmask":"255.255.255.0","gateway":"10.0.0.1","mtu":1500}]}"#.into(),
    );
    seeds.push(
        r#"{"add_nics":[{"nic_tag":"b","ip":"10.1.0.5","netmask":"255.255.0.0","gateway":"10.1.0.1"}],"remove_nics":["net0"],"ram":512,"vcpus":3,"add_disks":[{"size":10}],"remove_disks":["data"],"cpu_cap":20,"set_customer_metadata":{"k":"v"}}"#.into(),
    );
    seeds.push(
        r#"{"brand":"joyent","alias":"web01","image_uuid":"01b2c898-945f-11e1-a523-af1afbe22822","customer_metadata":{"a":1},"resolvers":["8.8.8.8"],"max_lwps":100,"quota":5}"#.into(),
    );
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut runs = 0u32;
    // At least 500 inputs however slow the machine, then more while time remains.
    while runs < 500 || (runs < 20_000 && Instant::now() < deadline) {
        let seed = &seeds[rng.below(seeds.len())];
        check(&mutate(&mut rng, seed));
        runs += 1;
    }
    println!("{runs} mutated inputs, no panic");
}
