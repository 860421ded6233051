//! What init, zone and vmm do to the host, written once: taps, bridges and link state
//! through ioctls ([`link`]), veths, addresses and routes over one netlink connection
//! ([`net`]), cgroup v1/v2
//! ([`cgroup`]), private mount namespaces ([`mount`]), antispoof and firewall rules on instance
//! ports ([`isolation`]), DHCP lease snooping on them ([`snoop`]), bridge VLANs
//! ([`vlan`]) and the `log` backend every
//! skerry program installs ([`log`]). `net` is behind the `net` feature, so a
//! program that only logs (imgadm) does not link netlink.
//!
//! Nothing here knows about zones, guests or manifests: callers name the links and
//! cgroups, this crate makes them so and says which one failed.

// Only `link` (ioctls), `cgroup::devices` (bpf(2)) and `snoop` (a filtered packet
// socket) need unsafe; everything else may not use it.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod isolation;
pub mod link;
pub mod log;
pub mod mount;
#[cfg(feature = "net")]
pub mod net;
pub mod snoop;
pub mod vlan;
