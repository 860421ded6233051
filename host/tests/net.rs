//! host::net and host::link against the real kernel, as root, inside throwaway
//! network namespaces made here (`ip netns add`), so nothing touches the host's
//! interfaces and `ip` can check what the kernel holds.

mod common;

use common::Netns;
use host::net::{LinkSettings, NetError, Netlink, Route};
use std::net::IpAddr;
use std::os::fd::AsFd;

fn is_up(link: &serde_json::Value) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "UP"))
}

#[test]
fn bridge_veth_address_and_route_are_made_and_removed() {
    let ns = Netns::new();
    let nl = Netlink::in_netns(ns.fd()).unwrap();
    let b = nl.blocking();

    ns.run(|| host::link::ensure_bridge("br0")).unwrap();
    let index = ns.link("br0").expect("bridge visible to ip")["ifindex"].clone();
    ns.run(|| host::link::ensure_bridge("br0")).unwrap();
    let br = ns.link("br0").expect("bridge visible to ip");
    assert_eq!(br["ifindex"], index, "idempotent");
    assert!(is_up(&br), "{br}");
    let details = ns.ip(&["-d", "link", "show", "br0"]);
    assert_eq!(details[0]["linkinfo"]["info_kind"], "bridge");

    b.add_veth("ve0", "ve0p").unwrap();
    ns.run(|| host::link::plug_into_bridge("ve0", "br0"))
        .unwrap();
    ns.run(|| host::link::plug_into_bridge("ve0", "br0"))
        .unwrap();
    let ve = ns.link("ve0").unwrap();
    assert_eq!(ve["master"], "br0", "{ve}");
    assert!(is_up(&ve), "{ve}");

    let addr: IpAddr = "10.77.0.1".parse().unwrap();
    b.add_address("br0", addr, 24).unwrap();
    b.add_address("br0", addr, 24).unwrap();
    let addrs = ns.ip(&["addr", "show", "dev", "br0"]);
    let info = addrs[0]["addr_info"].as_array().unwrap();
    assert!(
        info.iter()
            .any(|a| a["local"] == "10.77.0.1" && a["prefixlen"] == 24),
        "{addrs}"
    );

    let route = Route {
        destination: "10.78.0.0".parse().unwrap(),
        prefix: 16,
        gateway: Some("10.77.0.254".parse().unwrap()),
        iface: "br0".into(),
    };
    b.add_route(&route).unwrap();
    b.add_route(&route).unwrap();
    let routes = ns.ip(&["route", "show"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "10.78.0.0/16" && r["gateway"] == "10.77.0.254"),
        "{routes}"
    );

    assert!(b.delete("ve0").unwrap());
    assert!(ns.link("ve0p").is_none(), "the peer goes with its veth");
    assert!(!b.delete("ve0").unwrap(), "deleting twice is a no-op");
    b.set_down("br0").unwrap();
    assert!(!is_up(&ns.link("br0").unwrap()));
    assert!(b.delete("br0").unwrap());
    assert!(ns.link("br0").is_none());
    assert!(!b.exists("br0").unwrap());
}

#[test]
fn a_link_moves_into_another_namespace_renamed_and_addressed() {
    let (outer, inner) = (Netns::new(), Netns::new());
    let out = Netlink::in_netns(outer.fd()).unwrap();
    out.blocking().add_veth("vh0", "vh0tmp").unwrap();
    let inner_fd = inner.fd();
    out.blocking()
        .move_to_netns("vh0tmp", inner_fd.as_fd())
        .unwrap();
    assert!(outer.link("vh0tmp").is_none());

    let inside = Netlink::in_netns(inner.fd()).unwrap();
    let b = inside.blocking();
    b.configure_link(
        "vh0tmp",
        &LinkSettings {
            name: Some("net0".into()),
            mtu: Some(1400),
            mac: Some([0x02, 0, 0x0a, 0x58, 0, 0x0a]),
        },
    )
    .unwrap();
    b.set_up("net0").unwrap();
    b.add_address("net0", "192.168.77.2".parse().unwrap(), 24)
        .unwrap();
    b.add_route(&Route::default_via("192.168.77.1".parse().unwrap(), "net0"))
        .unwrap();
    let link = inner.link("net0").expect("renamed inside");
    assert_eq!(link["mtu"], 1400);
    assert_eq!(link["address"], "02:00:0a:58:00:0a");
    let routes = inner.ip(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "192.168.77.1", "{routes}");
    assert_eq!(routes[0]["dev"], "net0", "{routes}");
}

#[test]
fn errors_name_the_interface() {
    let ns = Netns::new();
    let nl = Netlink::in_netns(ns.fd()).unwrap();
    let e = nl.blocking().set_up("sknothere0").unwrap_err();
    assert!(matches!(e, NetError::NoSuchLink { .. }), "{e:?}");
    assert!(e.to_string().contains("sknothere0"), "{e}");
    let e = ns
        .run(|| host::link::plug_into_bridge("sknothere1", "br1"))
        .unwrap_err();
    assert!(e.to_string().contains("sknothere1"), "{e}");
    let e = nl.blocking().add_veth("lo", "lo2").unwrap_err();
    assert!(e.to_string().starts_with("lo: creating veth"), "{e}");
}

/// The async methods run on the caller's own executor, talking to the netlink
/// thread over channels: awaiting them from a tokio current-thread runtime (which
/// has nothing else to drive the socket) must complete.
#[test]
fn async_methods_work_from_another_runtime() {
    let ns = Netns::new();
    let nl = Netlink::in_netns(ns.fd()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        nl.add_veth("ve2", "ve2p").await.unwrap();
        assert!(nl.exists("ve2").await.unwrap());
    });
    assert!(ns.link("ve2").is_some());
}

#[test]
fn a_tap_is_opened_plugged_into_a_new_bridge_and_up() {
    let ns = Netns::new();
    ns.run(|| {
        let tap = host::link::open_tap("sktap0").expect("open /dev/net/tun (tun module?)");
        host::link::plug_into_bridge("sktap0", "skbr0").unwrap();
        // Twice is fine: already a port of that bridge.
        host::link::plug_into_bridge("sktap0", "skbr0").unwrap();
        drop(tap);
    });
    let tap = ns.link("sktap0");
    // A tap without its fd open and without TUNSETPERSIST is gone with the fd.
    assert!(tap.is_none(), "{tap:?}");
    let br = ns.link("skbr0").expect("the bridge was made");
    assert!(is_up(&br), "{br}");
    ns.run(|| {
        let _tap = host::link::open_tap("sktap1").unwrap();
        host::link::plug_into_bridge("sktap1", "skbr0").unwrap();
    });
}

#[test]
fn a_tap_stays_plugged_and_up_while_open() {
    let ns = Netns::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let fd = ns.fd();
    let holder = std::thread::spawn(move || {
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let tap = host::link::open_tap("sktap2").unwrap();
        host::link::plug_into_bridge("sktap2", "skbr2").unwrap();
        tx.send(()).unwrap();
        done_rx.recv().unwrap();
        drop(tap);
    });
    rx.recv().unwrap();
    let tap = ns.link("sktap2").expect("tap exists while open");
    assert_eq!(tap["master"], "skbr2", "{tap}");
    assert!(is_up(&ns.link("skbr2").unwrap()));
    let flags = tap["flags"].as_array().unwrap();
    assert!(flags.iter().any(|f| f == "UP"), "{tap}");
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}
