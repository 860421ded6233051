//! Bridge VLANs: a port on VLAN N of its bridge (N as its untagged PVID, nothing
//! else), the bridge's other ports (the nic tag's uplink) carrying N tagged, and
//! VLAN filtering on, so ports on different VLANs of one bridge cannot reach each
//! other.
//!
//! One netlink message per change, written here rather than through `net` (rtnetlink
//! and tokio), so the vmm, which links only `link`, sets its taps' VLANs with the same
//! code the zone runtime uses for veths.

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::io;

/// Why a VLAN could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct VlanError {
    /// The port or bridge and the step.
    pub what: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

fn failed(what: impl Into<String>) -> impl FnOnce(io::Error) -> VlanError {
    let what = what.into();
    move |source| VlanError { what, source }
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const AF_BRIDGE: u8 = 7;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const BRIDGE_VLAN_INFO_PVID: u16 = 2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 4;
/// The VLAN every bridge port starts on (the bridge's default PVID).
const DEFAULT_VID: u16 = 1;

/// A netlink attribute: length, type, payload, padded to 4 bytes.
fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut a = Vec::with_capacity(len + 3);
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(len.next_multiple_of(4), 0);
    a
}

/// A link request of `kind` for link `index` in address `family`, with `attrs`.
fn link_message(kind: u16, family: u8, index: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + attrs.len());
    // nlmsghdr: length (patched below), type, flags, seq, pid.
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family, pad, type, index, flags, change.
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(attrs);
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// `RTM_SETLINK`/`RTM_DELLINK` for the bridge VLAN `vid` with `flags` on port `index`.
fn message(kind: u16, index: u32, vid: u16, flags: u16) -> Vec<u8> {
    let info = [flags.to_ne_bytes(), vid.to_ne_bytes()].concat();
    let spec = nla(IFLA_AF_SPEC, &nla(IFLA_BRIDGE_VLAN_INFO, &info));
    link_message(kind, AF_BRIDGE, index, &spec)
}

/// `RTM_NEWLINK` turning VLAN filtering on for bridge `index`.
fn filtering_message(index: u32) -> Vec<u8> {
    let data = nla(IFLA_INFO_DATA, &nla(IFLA_BR_VLAN_FILTERING, &[1]));
    let info = nla(
        IFLA_LINKINFO,
        &[nla(IFLA_INFO_KIND, b"bridge\0"), data].concat(),
    );
    link_message(RTM_NEWLINK, 0, index, &info)
}

/// Sends one request and reads the kernel's acknowledgement.
fn request(msg: &[u8]) -> io::Result<()> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    use std::os::fd::AsRawFd;
    sendto(
        sock.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 1024];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    // nlmsghdr (16 bytes) then, for NLMSG_ERROR, the (negated) errno.
    if n < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("unexpected netlink answer"));
    }
    match i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

fn index_of(name: &str) -> Result<u32, VlanError> {
    nix::net::if_::if_nametoindex(name)
        .map_err(|e| failed(format!("port {name}"))(io::Error::from(e)))
}

/// Puts `port` (already a port of `bridge`) on VLAN `vid` alone, untagged, and has
/// every port of `bridge` for which `is_trunk` holds carry `vid` tagged. Turns VLAN
/// filtering on for the bridge (ports on no VLAN stay on the default one, 1).
pub fn isolate_port(
    bridge: &str,
    port: &str,
    vid: u16,
    is_trunk: impl Fn(&str) -> bool,
) -> Result<(), VlanError> {
    request(&filtering_message(index_of(bridge)?))
        .map_err(failed(format!("bridge {bridge}: VLAN filtering")))?;
    let index = index_of(port)?;
    request(&message(
        RTM_SETLINK,
        index,
        vid,
        BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED,
    ))
    .map_err(failed(format!("port {port}: VLAN {vid}")))?;
    request(&message(RTM_DELLINK, index, DEFAULT_VID, 0))
        .map_err(failed(format!("port {port}: leaving VLAN {DEFAULT_VID}")))?;
    let brif = format!("/sys/class/net/{bridge}/brif");
    let ports = std::fs::read_dir(&brif).map_err(failed(format!("listing {brif}")))?;
    for entry in ports.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != port && is_trunk(&name) {
            request(&message(RTM_SETLINK, index_of(&name)?, vid, 0))
                .map_err(failed(format!("uplink {name}: VLAN {vid} tagged")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_a_setlink_with_one_vlan_info() {
        let m = message(RTM_SETLINK, 7, 20, BRIDGE_VLAN_INFO_PVID);
        assert_eq!(m.len(), 44);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()), 44);
        assert_eq!(m[16], AF_BRIDGE);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(
            &m[40..44],
            [2u16.to_ne_bytes(), 20u16.to_ne_bytes()].concat()
        );
    }
}
