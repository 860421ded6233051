#![cfg(feature = "kdl")]
//! The KDL front end: the example manifests, defaults, round trips, and errors that
//! point at the right place with a message a person can act on.

use spec::{parse_str, to_kdl, Ensure, ImageRef, InstanceSpec, IpConfig, Kind};
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("manifests/ exists at the workspace root")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    files.sort();
    files
}

/// The problems of a text that must not parse, as `LINE:COL: message (help)` lines.
fn errors(text: &str) -> Vec<String> {
    let err = parse_str("t.kdl", text).expect_err("the manifest must be rejected");
    err.render_plain()
        .lines()
        .map(|l| l.strip_prefix("t.kdl:").unwrap().to_owned())
        .collect()
}

fn one(text: &str) -> InstanceSpec {
    let mut specs = parse_str("t.kdl", text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(specs.len(), 1);
    specs.remove(0)
}

#[test]
fn every_example_is_valid_and_round_trips() {
    let files = examples();
    assert!(
        files.len() >= 8,
        "expected the example manifests, found {files:?}"
    );
    for file in files {
        let specs = spec::parse_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!specs.is_empty(), "{} declares no instance", file.display());
        for s in specs {
            let text = to_kdl(&s);
            let mut back = parse_str("round.kdl", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back.len(), 1);
            let mut back = back.remove(0);
            back.origin = s.origin.clone();
            assert_eq!(back, s, "round trip of {} through\n{text}", file.display());
        }
    }
}

#[test]
fn the_examples_directory_loads_without_clashes() {
    let loaded = spec::load_dir(&examples_dir());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert!(loaded.instances.len() >= 10);
}

#[test]
fn zone_defaults_follow_design() {
    let s = one("zone web01 { image \"busybox@1.36\"; }");
    assert_eq!(s.name, "web01");
    assert_eq!(s.memory, 256 << 20);
    assert!(s.autoboot);
    assert_eq!(s.ensure, Ensure::Present);
    assert_eq!(s.uuid, None);
    assert_eq!(
        s.image,
        ImageRef::Name {
            name: "busybox".into(),
            version: Some("1.36".into())
        }
    );
    assert_eq!((s.origin.line, s.origin.col), (1, 1));
    let Kind::Zone(z) = s.kind else {
        panic!("not a zone")
    };
    assert_eq!(z.cpu_cap, 0);
    assert_eq!(z.pids, 2000);
    assert_eq!(z.hostname, "web01");
    assert_eq!(z.init, vec!["/sbin/init".to_owned()]);
    assert_eq!(z.quota, None);
}

#[test]
fn hvm_defaults_imply_a_boot_disk() {
    let s = one("hvm db01 {\n  image \"debian-hvm@12\"\n  disk data size=\"20G\"\n}");
    let Kind::Hvm(h) = s.kind else {
        panic!("not an hvm")
    };
    assert_eq!(h.vcpus, 1);
    assert_eq!(h.disks.len(), 2);
    assert_eq!(
        (h.disks[0].name.as_str(), h.disks[0].boot, h.disks[0].size),
        ("root", true, None)
    );
    assert_eq!(
        (h.disks[1].name.as_str(), h.disks[1].boot, h.disks[1].size),
        ("data", false, Some(20 << 30))
    );
}

#[test]
fn full_zone_reads_every_property() {
    let s = one(r#"zone web01 {
        uuid "5f0c7a52-3c2e-4a4b-9d1e-7a6f0b1c2d3e"
        image "busybox"
        memory "1G"
        cpu-cap 150
        pids 10
        quota "2G"
        hostname "www.example.com"
        autoboot #false
        init "/bin/sh" "-c" "sleep 1"
        env "A" "1"
        env "B" "2"
        nic net0 tag="admin" ip="fd00::5/64" gateway="fd00::1" mtu=9000 mac="02:AA:bb:cc:dd:ee"
        nic net1 tag="storage"
        resolver "1.1.1.1"
        resolver "fd00::53"
        metadata { role "web"; "with space" "x"; }
        ensure "absent"
    }"#);
    assert_eq!(
        s.uuid.unwrap().to_string(),
        "5f0c7a52-3c2e-4a4b-9d1e-7a6f0b1c2d3e"
    );
    assert_eq!(s.ensure, Ensure::Absent);
    assert!(!s.autoboot);
    assert_eq!(s.memory, 1 << 30);
    assert_eq!(
        s.nics[0].ip,
        IpConfig::Static {
            addr: "fd00::5".parse().unwrap(),
            prefix: 64
        }
    );
    assert_eq!(
        s.nics[0].mac.map(|m| m.to_string()).as_deref(),
        Some("02:aa:bb:cc:dd:ee")
    );
    assert_eq!(s.nics[0].mtu, Some(9000));
    assert_eq!(s.nics[1].ip, IpConfig::None);
    assert_eq!(s.resolvers.len(), 2);
    assert_eq!(s.metadata["with space"], "x");
    let Kind::Zone(z) = &s.kind else { panic!() };
    assert_eq!((z.cpu_cap, z.pids, z.quota), (150, 10, Some(2 << 30)));
    assert_eq!(z.init, vec!["/bin/sh", "-c", "sleep 1"]);
    assert_eq!(
        z.env,
        vec![("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    let back = parse_str("x.kdl", &to_kdl(&s)).unwrap().remove(0);
    assert_eq!(
        InstanceSpec {
            origin: s.origin.clone(),
            ..back
        },
        s
    );
}

#[test]
fn every_error_of_a_file_is_reported_at_its_place() {
    let text = "zone web01 {\n    image \"busybox@1.36\"\n    memroy \"256M\"\n    cpu-cap -1\n    pids 0\n}\nhvm db01 {\n    image \"debian-hvm@12\"\n    vcpus 0\n    memory \"8M\"\n}\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("3:5: unknown zone property `memroy`")
            && errs[0].contains("did you mean `memory`?"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("4:13: `cpu-cap` is -1"), "{}", errs[1]);
    assert!(errs[2].starts_with("5:10: `pids` is 0"), "{}", errs[2]);
    assert!(
        errs[3].starts_with("9:11: `vcpus` is 0; it must be 1 to 255"),
        "{}",
        errs[3]
    );
    assert!(
        errs[4].starts_with("10:12: `memory` is 8M; the minimum is 16M"),
        "{}",
        errs[4]
    );
}

#[test]
fn names_are_checked_and_unique() {
    assert!(errors("zone Web { image \"x\"; }")[0]
        .starts_with("1:6: `Web` is not a valid instance name"));
    assert!(
        errors(&format!("zone {} {{ image \"x\"; }}", "a".repeat(64)))[0]
            .contains("the limit is 63")
    );
    let e = errors("zone a { image \"x\"; }\nhvm a { image \"y\"; }");
    assert_eq!(
        e,
        vec!["2:1: instance `a` is declared twice (help: the first declaration is at t.kdl:1:1)"]
    );
    let u = "5f0c7a52-3c2e-4a4b-9d1e-7a6f0b1c2d3e";
    let e = errors(&format!(
        "zone a {{ image \"x\"; uuid \"{u}\"; }}\nzone b {{ image \"x\"; uuid \"{u}\"; }}"
    ));
    assert!(e[0].starts_with("2:1: uuid 5f0c7a52"), "{e:?}");
    assert!(errors("zone a { image \"x\"; uuid \"nope\"; }")[0].contains("`nope` is not a UUID"));
}

#[test]
fn unknown_names_get_hints() {
    assert!(errors("zome a { image \"x\"; }")[0].contains("did you mean `zone`?"));
    assert!(
        errors("zone a { image \"x\"; cmdline \"quiet\"; }")[0].contains("property of hvm nodes")
    );
    assert!(errors("zone a { image \"x\"; frobnicate 1; }")[0]
        .contains("zone properties are: image, memory"));
    let e = errors("zone a { image \"x\"; nic net0 tga=\"admin\"; }");
    assert!(
        e[1].contains("unknown nic field `tga`") && e[1].contains("did you mean `tag`?"),
        "{e:?}"
    );
    assert!(errors("hvm a { image \"x\"; disk d sise=\"1G\"; }")
        .join("\n")
        .contains("did you mean `size`?"));
}

#[test]
fn sizes_and_ranges() {
    assert!(errors("zone a { image \"x\"; memory \"2X\"; }")[0].contains("unknown size suffix `X`"));
    assert!(errors("zone a { image \"x\"; memory 512; }")[0].contains("takes a size string"));
    assert!(errors("zone a { image \"x\"; cpu-cap 1.5; }")[0].contains("takes a whole number"));
    assert!(errors("zone a { image \"x\"; autoboot \"yes\"; }")[0].contains("#true or #false"));
    assert!(errors("zone a { image \"x\"; autoboot true; }")[0]
        .contains("KDL v2 writes this keyword with a hash: #true"));
    assert!(
        errors("hvm a { image \"x\"; disk d boot=1; }")[0].contains("`boot` takes #true or #false")
    );
    assert!(
        errors("zone a { image \"x\"; nic net0 tag=\"admin\" mtu=100; }")[0]
            .contains("`mtu` is 100; it must be 576 to 9000")
    );
    assert_eq!(
        one("zone a { image \"x\"; memory \"16M\"; }").memory,
        16 << 20
    );
}

#[test]
fn nics_addresses_and_gateways() {
    assert!(
        errors("zone a { image \"x\"; nic net0 tag=\"admin\" ip=\"10.0.0.5\"; }")[0]
            .contains("CIDR")
    );
    assert!(errors(
        "zone a { image \"x\"; nic net0 tag=\"admin\" ip=\"10.0.0.5/24\" gateway=\"10.0.1.1\"; }"
    )[0]
    .contains("outside the nic's subnet 10.0.0.5/24"));
    assert!(errors(
        "zone a { image \"x\"; nic net0 tag=\"admin\" ip=\"dhcp\" gateway=\"10.0.1.1\"; }"
    )[0]
    .contains("needs a static ip"));
    assert!(errors("zone a { image \"x\"; nic net0 ip=\"dhcp\"; }")[0].contains("has no `tag`"));
    assert!(
        errors("zone a { image \"x\"; nic net0 tag=\"a\"; nic net0 tag=\"b\"; }")[0]
            .contains("nic `net0` is declared twice")
    );
    assert!(
        errors("zone a { image \"x\"; resolver \"dns.google\"; }")[0].contains("not an IP address")
    );
    assert_eq!(
        one("zone a { image \"x\"; nic net0 tag=\"admin\" ip=\"dhcp\"; }").nics[0].ip,
        IpConfig::Dhcp
    );
    // A bad MAC is refused where it is written, as every other value.
    assert_eq!(
        errors("zone a {\n  image \"x\"\n  nic net0 tag=\"admin\" mac=\"02:00:0g:00:00:01\"\n}\n"),
        vec![
            "3:24: `02:00:0g:00:00:01` is not a MAC address like \"02:08:20:aa:bb:cc\"".to_string()
        ]
    );
}

#[test]
fn disks_have_at_most_one_boot_disk() {
    let e = errors("hvm a {\n image \"x\"\n disk r boot=#true\n disk s boot=#true size=\"1G\"\n}");
    assert!(
        e[0].starts_with("4:2: a second boot disk") && e[0].contains("t.kdl:3:2"),
        "{e:?}"
    );
    assert!(errors("hvm a { image \"x\"; disk d; }")[0].contains("a data disk needs a `size`"));
    assert!(
        errors("hvm a { image \"x\"; disk d size=\"1G\"; disk d size=\"2G\"; }")[0]
            .contains("disk `d` is declared twice")
    );
    assert!(errors("hvm a { image \"x\"; disk root size=\"1G\"; }")[0]
        .contains("no disk is marked boot=#true"));
}

#[test]
fn structure_errors() {
    assert!(errors("zone a")[0].contains("has no properties"));
    assert!(errors("zone a { memory \"1G\"; }")[0].contains("has no `image`"));
    assert!(errors("zone { image \"x\"; }")[0].contains("zone has no name"));
    assert!(errors("zone a { image \"x\"; image \"y\"; }")[0].contains("`image` is set twice"));
    let e = errors("zone a { image \"not valid!\"; }");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("not an image reference"), "{e:?}");
    assert!(
        errors("zone a { image \"x\"; ensure \"gone\"; }")[0].contains("\"present\" or \"absent\"")
    );
    assert!(errors("zone a { image \"x\"; init \"sbin/init\"; }")[0].contains("absolute path"));
    assert!(errors("zone a { image \"x\"; env \"A\"; }")[0].contains("two strings"));
    assert!(
        errors("zone a { image \"x\"; metadata { k { nested 1; }; }; }")[0].contains("nesting")
    );
    let syntax = errors("zone a {\n  image \"x\n}\n");
    assert!(syntax[0].starts_with("2:9:"), "{syntax:?}");
}

#[test]
fn graphical_rendering_underlines_the_span() {
    let err = parse_str(
        "web.kdl",
        "zone a {\n    image \"x\"\n    memroy \"1G\"\n}\n",
    )
    .unwrap_err();
    let out = err.render_graphical(false);
    assert!(out.contains("[web.kdl:3:5]"), "{out}");
    assert!(out.contains("──┬"), "{out}");
    assert!(out.contains("did you mean `memory`?"), "{out}");
}

#[test]
fn load_dir_skips_bad_files_and_reports_clashes() {
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    w(
        "a.kdl",
        "zone web01 { image \"busybox@1.36\"; }\nzone web02 { image \"busybox@1.36\"; }\n",
    );
    w(
        "b.kdl",
        "zone web03 { image \"busybox@1.36\"; memroy \"1G\"; }\n",
    );
    w(
        "c.kdl",
        "zone db01 { image \"debian@12\"; }\n\nzone web01 { image \"debian@12\"; }\n",
    );
    w("notes.txt", "not a manifest");
    w(".hidden.kdl", "garbage {");
    let loaded = spec::load_dir(dir.path());
    let names: Vec<&str> = loaded.instances.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web01", "web02", "db01"]);
    assert_eq!(loaded.instances[0].origin.file, dir.path().join("a.kdl"));
    assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
    let bad = loaded.errors[0].to_string();
    assert!(
        bad.contains("b.kdl:1:36: unknown zone property `memroy`"),
        "{bad}"
    );
    let clash = loaded.errors[1].to_string();
    assert!(
        clash.contains("c.kdl:3:1: instance `web01` is already declared"),
        "{clash}"
    );
    assert!(clash.contains("a.kdl:1:1"), "{clash}");
    let missing = spec::load_dir(&dir.path().join("nope"));
    assert!(missing.errors[0].to_string().contains("cannot read"));
}

#[test]
fn the_readme_documents_every_property() {
    use spec::manifest::schema::*;
    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    for name in KINDS
        .iter()
        .chain(ZONE_PROPS)
        .chain(HVM_PROPS)
        .chain(NIC_FIELDS)
        .chain(DISK_FIELDS)
    {
        assert!(
            readme.contains(&format!("| `{name}")) || readme.contains(&format!("{name} NAME")),
            "manifests/README.md does not document `{name}`"
        );
    }
    for file in examples() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            readme.contains(&format!("`{name}`")),
            "manifests/README.md does not list {name}"
        );
    }
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1 op@desk";

#[test]
fn metadata_service_properties_read_and_round_trip() {
    for kind in ["zone", "hvm"] {
        let image = if kind == "zone" {
            "busybox@1.36"
        } else {
            "debian-hvm@12"
        };
        let s = one(&format!(
            "{kind} g {{\n  image \"{image}\"\n  user-script \"#!/bin/sh\\necho hi\\n\"\n  user-data \"{{}}\"\n  ssh-key \"{KEY}\"\n  ssh-key \"  {KEY}2 \"\n}}\n"
        ));
        assert_eq!(s.user_script.as_deref(), Some("#!/bin/sh\necho hi\n"));
        assert_eq!(s.user_data.as_deref(), Some("{}"));
        assert_eq!(s.ssh_keys, vec![KEY.to_string(), format!("{KEY}2")]);
        let back = parse_str("x.kdl", &to_kdl(&s)).unwrap().remove(0);
        assert_eq!(
            InstanceSpec {
                origin: s.origin.clone(),
                ..back
            },
            s
        );
    }
}

#[test]
fn bad_metadata_service_properties_are_refused_at_their_place() {
    let text = format!(
        "zone g {{\n  image \"busybox@1.36\"\n  ssh-key \"ssh-ed25519 AAAA\"\n  ssh-key \"ssh-foo {}\"\n  ssh-key \"{KEY}\"\n  ssh-key \"{KEY}\"\n  user-script \"echo hi\"\n  user-data 5\n  user-script \"again\"\n  metadata {{\n    root_authorized_keys \"{KEY}\"\n  }}\n}}\n",
        &KEY[12..]
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(
        errs[0].starts_with("3:11: the key data is not a ssh-ed25519 key"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("4:11: `ssh-foo` is not an SSH key type"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("6:11: this ssh-key is given twice"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].starts_with("8:13: `user-data` takes a string"),
        "{}",
        errs[3]
    );
    assert!(
        errs[4].starts_with("9:3: `user-script` is set twice"),
        "{}",
        errs[4]
    );
    assert!(
        errs[5].starts_with("11:5: `root_authorized_keys` is served from the `ssh-key` property"),
        "{}",
        errs[5]
    );
}

/// A manifest is at most 1 MiB (checked before parsing), so a user-script past the
/// metadata service's 1 MiB per value never gets into one; the value bound holds for
/// what does not come through a manifest (a SmartOS payload, `vmadm update`).
#[test]
fn an_oversized_user_script_is_refused_in_a_manifest_and_in_a_payload() {
    let big = "x".repeat(spec::customer::MAX_VALUE_BYTES + 1);
    let text = format!("zone g {{\n  image \"busybox@1.36\"\n  user-script \"{big}\"\n}}\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("1048576 bytes"), "{}", errs[0]);
    let mut spec = one("zone g { image \"busybox@1.36\"; }\n");
    spec.user_script = Some(big);
    let problems = spec::customer::problems(&spec);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("user-script: 1048577 bytes"),
        "{}",
        problems[0]
    );
}

#[test]
fn the_zone_constructor_is_a_manifest_with_only_an_image() {
    let parsed = spec::parse_str("m.kdl", "zone web01 { image \"busybox@1.36\"; }")
        .unwrap()
        .remove(0);
    let mut built = spec::InstanceSpec::zone("web01", parsed.image.clone());
    built.origin = parsed.origin.clone();
    assert_eq!(built, parsed);
}

#[test]
fn an_oci_image_reference_parses_and_leaves_init_to_the_image() {
    let text = "zone app { image \"oci:registry.example:5000/team/app:1.4\"; }\n";
    let specs = spec::manifest::parse_str("app.kdl", text).unwrap();
    let spec::ImageRef::Oci(r) = &specs[0].image else {
        panic!("{:?}", specs[0].image)
    };
    assert_eq!(r.registry, "registry.example:5000");
    assert_eq!(r.repository, "team/app");
    let spec::Kind::Zone(z) = &specs[0].kind else {
        panic!()
    };
    assert!(
        z.init.is_empty(),
        "the image's Entrypoint/Cmd applies: {z:?}"
    );
    // It writes back as it was read.
    let again = spec::manifest::parse_str("b.kdl", &spec::manifest::to_kdl(&specs[0])).unwrap();
    assert_eq!(again[0].image, specs[0].image);
    let e = spec::manifest::parse_str("bad.kdl", "zone x { image \"oci:NoRegistry\"; }\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.kdl:1:") && e.contains("not an OCI reference"),
        "{e}"
    );
}
