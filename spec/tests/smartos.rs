#![cfg(feature = "kdl")]
//! SmartOS payloads -> specs: names, units, nics, disks, and updates.

use spec::smartos::{self, apply_update, Options};
use spec::{ImageRef, IpConfig, Kind};

const IMG: &str = "01b2c898-945f-11e1-a523-af1afbe22822";

fn create(json: &str) -> spec::InstanceSpec {
    let mut v = smartos::from_payload(json).unwrap_or_else(|e| panic!("{e}\n{}", e.to_json()));
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn fields(json: &str) -> Vec<String> {
    smartos::from_payload(json)
        .expect_err("must be invalid")
        .fields()
}

#[test]
fn joyent_payload_maps_names_and_units() {
    let s = create(&format!(
        r#"{{"brand": "joyent", "alias": "web01", "image_uuid": "{IMG}", "max_physical_memory": 512,
            "cpu_cap": 150, "max_lwps": 300, "quota": 10, "autoboot": "false", "hostname": "www",
            "resolvers": ["8.8.8.8"], "customer_metadata": {{"role": "web", "n": 42, "b": true}},
            "nics": [{{"nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1",
                       "mac": "C2:DE:E7:EC:99:68", "mtu": "1500"}},
                     {{"nic_tag": "storage", "ip": "dhcp", "interface": "net7"}}]}}"#
    ));
    assert_eq!(s.name, "web01");
    assert_eq!(s.uuid, None);
    assert_eq!(s.image, ImageRef::Uuid(IMG.parse().unwrap()));
    assert_eq!(s.memory, 512 << 20);
    assert!(!s.autoboot);
    assert_eq!(s.metadata["n"], "42");
    assert_eq!(s.metadata["b"], "true");
    assert_eq!(s.nics[0].name, "net0");
    assert_eq!(
        s.nics[0].ip,
        IpConfig::Static {
            addr: "10.0.0.5".parse().unwrap(),
            prefix: 24
        }
    );
    assert_eq!(s.nics[0].gateway, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(
        s.nics[0].mac.map(|m| m.to_string()).as_deref(),
        Some("c2:de:e7:ec:99:68")
    );
    assert_eq!(s.nics[0].mtu, Some(1500));
    assert_eq!(
        (s.nics[1].name.as_str(), &s.nics[1].ip),
        ("net7", &IpConfig::Dhcp)
    );
    let Kind::Zone(z) = &s.kind else {
        panic!("not a zone")
    };
    assert_eq!(
        (z.cpu_cap, z.pids, z.quota, z.hostname.as_str()),
        (150, 300, Some(10 << 30), "www")
    );
    // What a payload creates is stored as a manifest and reads back the same.
    let back = spec::parse_str("x.kdl", &spec::to_kdl(&s))
        .unwrap()
        .remove(0);
    assert_eq!(
        spec::InstanceSpec {
            origin: s.origin.clone(),
            ..back
        },
        s
    );
}

#[test]
fn without_alias_the_uuid_is_the_name() {
    let u = "91273098-cc0a-4fdd-9e6d-8f7496f3db80";
    let s = create(&format!(
        r#"{{"brand": "lx", "uuid": "{u}", "image_uuid": "{IMG}"}}"#
    ));
    assert_eq!(
        (s.name.as_str(), s.uuid.unwrap().to_string().as_str()),
        (u, u)
    );
    let s = create(&format!(
        r#"{{"brand": "joyent-minimal", "image_uuid": "{IMG}"}}"#
    ));
    assert_eq!(s.uuid.unwrap().to_string(), s.name);
}

#[test]
fn hvm_payload_boots_from_the_image_disk() {
    let s = create(
        r#"{"brand": "bhyve", "alias": "db01", "vcpus": 4, "ram": 2048,
            "disks": [{"size": 10240}, {"boot": true, "image_uuid": "71101322-43a5-11e1-8f01-cf2a3031a7f4", "image_size": 5120}]}"#,
    );
    assert_eq!(s.memory, 2 << 30);
    let Kind::Hvm(h) = &s.kind else {
        panic!("not an hvm")
    };
    assert_eq!(h.vcpus, 4);
    assert_eq!(h.disks.len(), 2);
    assert!(h.disks[0].boot && h.disks[0].name == "root" && h.disks[0].size.is_none());
    assert_eq!(
        (h.disks[1].name.as_str(), h.disks[1].size),
        ("disk0", Some(10 << 30))
    );
    assert_eq!(
        fields(r#"{"brand": "kvm"}"#),
        ["missing_properties:disks.0.image_uuid"]
    );
}

#[test]
fn invalid_payloads_get_smartos_fields() {
    assert_eq!(fields("{}"), ["missing_properties:brand"]);
    assert_eq!(fields(r#"{"brand": "gorilla"}"#), ["bad_brand:gorilla"]);
    assert_eq!(
        fields(r#"{"brand": "joyent"}"#),
        ["missing_properties:image_uuid"]
    );
    assert_eq!(
        fields(&format!(
            r#"{{"brand": "joyent", "image_uuid": "{IMG}", "vcpus": 2, "alias": "Bad Name"}}"#
        )),
        ["bad_properties:vcpus", "bad_values:alias"]
    );
    // Found by the fuzzer: a nic tag a manifest would refuse.
    let f = fields(&format!(
        r#"{{"brand": "joyent", "image_uuid": "{IMG}", "nics": [{{"nic_tag": "admin ", "ip": "dhcp"}}]}}"#
    ));
    assert_eq!(f, ["bad_values:nics.*.nic_tag"]);
    let f = fields(&format!(
        r#"{{"brand": "joyent", "image_uuid": "{IMG}", "nics": [{{"nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.1.1"}}]}}"#
    ));
    assert_eq!(f, ["bad_values:nics.*.gateway"]);
    let e = smartos::from_payload("[1, 2]").unwrap_err();
    assert!(e.notes[0].contains("a JSON object"), "{e}");
    let e = smartos::from_payload("{\"brand\": ").unwrap_err();
    assert!(e.notes[0].contains("invalid JSON at line 1"), "{e}");
}

#[test]
fn images_are_checked_when_known() {
    let none_installed = |_: &uuid::Uuid| false;
    let opts = Options {
        images: Some(&none_installed),
    };
    let e = smartos::from_payload_with(
        &format!(r#"{{"brand": "joyent", "image_uuid": "{IMG}"}}"#),
        opts,
    )
    .unwrap_err();
    assert_eq!(e.fields(), ["bad_values:image_uuid"]);
    assert!(e.notes[0].contains("imgadm import"), "{e}");
}

#[test]
fn updates_apply_and_say_when_a_restart_is_needed() {
    let zone = create(&format!(
        r#"{{"brand": "joyent", "alias": "web01", "image_uuid": "{IMG}", "nics": [{{"nic_tag": "admin", "ip": "dhcp", "mac": "02:00:00:00:00:01"}}]}}"#
    ));
    let u = apply_update(
        &zone,
        r#"{"max_physical_memory": 1024, "cpu_cap": 50}"#,
        Options::default(),
    )
    .unwrap();
    assert_eq!(u.spec.memory, 1 << 30);
    assert!(!u.needs_restart, "zone limits apply live: {:?}", u.changes);
    assert_eq!(u.changes[0].to_string(), "memory: 256M -> 1G");
    let u = apply_update(
        &zone,
        r#"{"add_nics": [{"nic_tag": "storage", "ip": "10.1.0.5", "netmask": "255.255.0.0"}], "remove_nics": ["02:00:00:00:00:01"]}"#,
        Options::default(),
    )
    .unwrap();
    assert!(
        !u.needs_restart,
        "a zone's nics change live: {:?}",
        u.changes
    );
    assert_eq!(u.spec.nics.len(), 1);
    assert_eq!(
        (u.spec.nics[0].name.as_str(), u.spec.nics[0].tag.as_str()),
        ("net0", "storage")
    );
    let u = apply_update(
        &zone,
        r#"{"add_nics": [{"nic_tag": "b"}, {"nic_tag": "c", "interface": "net9"}]}"#,
        Options::default(),
    )
    .unwrap();
    let names: Vec<&str> = u.spec.nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["net0", "net1", "net9"]);
    let e = apply_update(
        &zone,
        r#"{"add_nics": [{"nic_tag": "b", "interface": "net0"}]}"#,
        Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.fields(), ["bad_values:add_nics.*.interface"]);
    let e = apply_update(&zone, r#"{"alias": "other"}"#, Options::default()).unwrap_err();
    assert_eq!(e.fields(), ["bad_values:alias"]);
    let e = apply_update(&zone, r#"{"vcpus": 2}"#, Options::default()).unwrap_err();
    assert_eq!(e.fields(), ["bad_properties:vcpus"]);

    let vm = create(
        r#"{"brand": "kvm", "alias": "vm01", "disks": [{"boot": true, "image_uuid": "71101322-43a5-11e1-8f01-cf2a3031a7f4"}]}"#,
    );
    let u = apply_update(
        &vm,
        r#"{"vcpus": 2, "add_disks": [{"size": 1024}]}"#,
        Options::default(),
    )
    .unwrap();
    assert!(u.needs_restart);
    let Kind::Hvm(h) = &u.spec.kind else { panic!() };
    assert_eq!(h.vcpus, 2);
    assert_eq!(
        (h.disks[1].name.as_str(), h.disks[1].size),
        ("disk0", Some(1 << 30))
    );
    let e = apply_update(&vm, r#"{"remove_disks": ["root"]}"#, Options::default()).unwrap_err();
    assert!(e.notes[0].contains("boot disk"), "{e}");
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPTlaXfXGmWO0/kUFKX0YQX/QTGxiNTFhEFN+D8Kgst1 op@desk";

#[test]
fn customer_metadata_script_data_and_keys_become_properties() {
    let s = create(&format!(
        r##"{{"brand": "kvm", "alias": "v", "disks": [{{"boot": true, "image_uuid": "{IMG}"}}],
            "customer_metadata": {{"role": "web", "user-script": "#!/bin/sh\ntrue\n",
            "user-data": "ud", "root_authorized_keys": "{KEY}\n\n{KEY}2\n"}}}}"##
    ));
    assert_eq!(s.metadata.len(), 1);
    assert_eq!(s.user_script.as_deref(), Some("#!/bin/sh\ntrue\n"));
    assert_eq!(s.user_data.as_deref(), Some("ud"));
    assert_eq!(s.ssh_keys, vec![KEY.to_string(), format!("{KEY}2")]);
    assert_eq!(
        s.customer_metadata()["root_authorized_keys"],
        format!("{KEY}\n{KEY}2\n")
    );
    // A key that is not one is refused, as the manifest refuses it.
    let bad = smartos::from_payload(&format!(
        r#"{{"brand": "lx", "alias": "z", "image_uuid": "{IMG}",
            "customer_metadata": {{"root_authorized_keys": "not a key"}}}}"#
    ))
    .unwrap_err();
    assert!(bad.to_string().contains("not an SSH key type"), "{bad}");

    let u = apply_update(
        &s,
        r#"{"set_customer_metadata": {"user-data": "new"}, "remove_customer_metadata": ["user-script", "role"]}"#,
        Options::default(),
    )
    .unwrap();
    assert!(!u.needs_restart, "{:?}", u.changes);
    assert_eq!(u.spec.user_data.as_deref(), Some("new"));
    assert!(u.spec.user_script.is_none() && u.spec.metadata.is_empty());
    let props: Vec<&str> = u.changes.iter().map(|c| c.property.as_str()).collect();
    assert_eq!(props, vec!["metadata", "user-script", "user-data"]);
}
