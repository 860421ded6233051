//! Fuzzes the manifest front ends with arbitrary bytes: KDL manifests and SmartOS
//! JSON payloads must never panic, every error must render, and whatever parses
//! must survive a round trip through `to_kdl`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match spec::parse_str("fuzz.kdl", text) {
        Ok(specs) => {
            for s in specs {
                let kdl = spec::to_kdl(&s);
                let mut back = spec::parse_str("round.kdl", &kdl)
                    .unwrap_or_else(|e| panic!("to_kdl output does not parse: {e}\n{kdl}"));
                assert_eq!(back.len(), 1);
                let mut back = back.remove(0);
                back.origin = s.origin.clone();
                assert_eq!(back, s, "round trip changed the spec:\n{kdl}");
            }
        }
        Err(e) => {
            let _ = e.render_plain();
            let _ = e.render_graphical(false);
        }
    }
    if let Ok(specs) = spec::smartos::from_payload(text) {
        for s in specs {
            let kdl = spec::to_kdl(&s);
            assert!(
                spec::parse_str("payload.kdl", &kdl).is_ok(),
                "payload spec does not round trip:\n{kdl}"
            );
        }
    }
    for brand in ["joyent", "kvm"] {
        let _ = spec::smartos::validate_update(brand, text);
    }
    // Updates of both kinds must leave a spec that still round-trips.
    let bases = spec::parse_str(
        "base.kdl",
        "zone z { image \"busybox@1.36\"; nic net0 tag=\"admin\" ip=\"dhcp\" mac=\"02:00:00:00:00:01\"; }\n\
         hvm h { image \"debian-hvm@12\"; disk data size=\"1G\"; }",
    )
    .expect("the base manifest is valid");
    for base in &bases {
        if let Ok(u) = spec::smartos::apply_update(base, text, Default::default()) {
            let kdl = spec::to_kdl(&u.spec);
            assert!(
                spec::parse_str("updated.kdl", &kdl).is_ok(),
                "updated spec does not round trip:\n{kdl}"
            );
        }
    }
});
