#![cfg(feature = "kdl")]
//! Tenant isolation properties: nic VLANs and antispoof switches, the firewall block,
//! their SmartOS payload keys, and bad values refused at their place.

use spec::{parse_str, to_kdl, FirewallProto, FirewallRule, InstanceSpec, NicAllow};

fn one(text: &str) -> InstanceSpec {
    let mut specs = parse_str("t.kdl", text).unwrap_or_else(|e| panic!("{e}"));
    specs.remove(0)
}

/// The problems of a text that must not parse, as `LINE:COL: message` lines.
fn errors(text: &str) -> Vec<String> {
    let err = parse_str("t.kdl", text).expect_err("the manifest must be rejected");
    err.render_plain()
        .lines()
        .map(|l| l.strip_prefix("t.kdl:").unwrap().to_owned())
        .collect()
}

const FULL: &str = r#"zone a {
    image "x"
    nic net0 tag="admin" ip="10.88.0.10/24" vlan=20 allow-ip-spoofing=#true allow-restricted-traffic=#true
    firewall {
        allow "tcp" port=22
        allow "tcp" port="8000-8080" from="10.88.0.0/24"
        allow "udp" port=53 from="10.88.0.5"
        allow "icmp"
    }
}"#;

#[test]
fn nic_switches_and_firewall_read_and_round_trip() {
    let s = one(FULL);
    let nic = &s.nics[0];
    assert_eq!(nic.vlan, 20);
    assert_eq!(
        nic.allow,
        NicAllow {
            ip_spoofing: true,
            mac_spoofing: false,
            dhcp_spoofing: false,
            restricted_traffic: true
        }
    );
    let fw = s
        .firewall
        .as_ref()
        .expect("the block turns the firewall on");
    assert_eq!(
        fw.rules,
        vec![
            FirewallRule {
                proto: FirewallProto::Tcp,
                ports: Some((22, 22)),
                from: None
            },
            FirewallRule {
                proto: FirewallProto::Tcp,
                ports: Some((8000, 8080)),
                from: Some(("10.88.0.0".parse().unwrap(), 24))
            },
            FirewallRule {
                proto: FirewallProto::Udp,
                ports: Some((53, 53)),
                from: Some(("10.88.0.5".parse().unwrap(), 32))
            },
            FirewallRule {
                proto: FirewallProto::Icmp,
                ports: None,
                from: None
            },
        ]
    );
    let mut back = one(&to_kdl(&s));
    back.origin = s.origin.clone();
    assert_eq!(back, s, "{}", to_kdl(&s));
}

#[test]
fn antispoof_is_on_and_the_firewall_off_by_default() {
    let s = one(r#"hvm h { image "x"; nic net0 tag="admin" ip="dhcp"; }"#);
    assert_eq!(s.nics[0].allow, NicAllow::default());
    assert_eq!(s.nics[0].vlan, 0);
    assert!(s.firewall.is_none());
    let s = one(r#"hvm h { image "x"; firewall; }"#);
    assert!(
        s.firewall.unwrap().rules.is_empty(),
        "an empty block denies all"
    );
}

#[test]
fn bad_vlans_rules_protocols_and_ports_are_refused_at_their_place() {
    assert_eq!(
        errors("zone a {\n image \"x\"\n nic net0 tag=\"admin\" vlan=4095\n}"),
        vec!["3:23: `vlan` is 4095; it must be 0 to 4094"]
    );
    assert!(
        errors("zone a {\n image \"x\"\n nic net0 tag=\"admin\" allow-ip-spoofing=\"yes\"\n}")[0]
            .starts_with("3:23: `allow-ip-spoofing` takes #true or #false")
    );
    let fw = |rule: &str| {
        errors(&format!(
            "zone a {{\n image \"x\"\n firewall {{\n  {rule}\n }}\n}}"
        ))
    };
    assert!(fw("allow \"sctp\" port=1")[0].starts_with("4:9: unknown protocol `sctp`"));
    assert!(fw("allow \"tcp\" port=0")[0].starts_with("4:15: port outside 1-65535"));
    assert!(fw("allow \"tcp\" port=65536")[0].starts_with("4:15: port outside 1-65535"));
    assert!(fw("allow \"udp\" port=\"9-x\"")[0].starts_with("4:15: `9-x` is not a port range"));
    assert!(
        fw("allow \"udp\" port=\"90-9\"")[0].starts_with("4:15: port range 90-9 runs backwards")
    );
    assert!(fw("allow \"icmp\" port=1")[0].starts_with("4:16: icmp has no ports"));
    assert!(fw("deny \"tcp\"")[0].starts_with("4:3: unknown firewall rule `deny`"));
    assert!(fw("allow port=22")[0].starts_with("4:3: `allow` needs a protocol"));
    assert!(fw("allow \"tcp\" from=\"10.0.0.0/33\"")[0]
        .starts_with("4:15: `10.0.0.0/33` is not an address"));
    assert!(fw("allow \"tcp\" dport=22")[0].starts_with("4:15: unknown rule field `dport`"));
}

#[test]
fn smartos_payload_keys_map_to_the_switches_and_the_firewall() {
    let json = r#"{"brand":"joyent","alias":"a","image_uuid":"5f3c7d8a-54c8-4b1e-9f6b-6f2c1c2b9f00",
        "firewall_enabled": true,
        "nics":[{"nic_tag":"admin","ip":"10.88.0.10","netmask":"255.255.255.0","vlan_id":30,
                 "allow_ip_spoofing":true,"allow_mac_spoofing":true,
                 "allow_dhcp_spoofing":true,"allow_restricted_traffic":true}]}"#;
    let s = spec::smartos::from_payload(json).unwrap_or_else(|e| panic!("{e}"));
    let s = s.into_iter().next().unwrap();
    assert_eq!(s.nics[0].vlan, 30);
    assert!(s.nics[0].allow.ip_spoofing && s.nics[0].allow.mac_spoofing);
    assert!(s.nics[0].allow.dhcp_spoofing && s.nics[0].allow.restricted_traffic);
    assert_eq!(s.firewall, Some(spec::Firewall::default()));
}

#[test]
fn smartos_updates_set_the_switches_and_the_firewall() {
    use spec::smartos::{apply_update, Options};
    let json = r#"{"brand":"joyent","alias":"a","image_uuid":"5f3c7d8a-54c8-4b1e-9f6b-6f2c1c2b9f00",
        "nics":[{"nic_tag":"admin","ip":"dhcp","mac":"02:00:00:00:00:01"}]}"#;
    let s = spec::smartos::from_payload(json).unwrap().remove(0);
    let u = apply_update(
        &s,
        r#"{"firewall_enabled": true, "update_nics": [{"mac": "02:00:00:00:00:01",
            "vlan_id": 12, "allow_ip_spoofing": true}]}"#,
        Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(u.spec.nics[0].vlan, 12);
    assert!(u.spec.nics[0].allow.ip_spoofing);
    assert_eq!(u.spec.firewall, Some(spec::Firewall::default()));
    // A zone's nics are replugged and its firewall swapped while it runs.
    assert!(!u.needs_restart, "{:?}", u.changes);
    let off = apply_update(
        &u.spec,
        r#"{"firewall_enabled": false}"#,
        Options::default(),
    )
    .unwrap();
    assert_eq!(off.spec.firewall, None);
    assert!(!off.needs_restart, "{:?}", off.changes);
    let bad = apply_update(
        &s,
        r#"{"update_nics": [{"mac": "02:00:00:00:00:01", "vlan_id": 4095}]}"#,
        Options::default(),
    );
    assert!(bad.is_err(), "vlan_id 4095 must be refused");
}
