//! What PID 1 starts or runs besides the node daemon: the system bus, DHCP, the rescue
//! shell, and the orphan reaper (the boot manifests are `boot_manifests`'s).

use super::error::{io, BootError};
use crate::monitor::watch;
use crate::net::{self, IfaceAddr};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The system bus socket every client finds by default.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The system bus policy: anyone may talk to init (it checks uids itself for
/// mutating calls), only root may own org.skerry.Node1.
pub fn dbus_config(socket: &str) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="false"/>
    <allow receive_sender="*"/>
  </policy>
  <policy user="root">
    <allow own="*"/>
  </policy>
  <policy context="default">
    <deny own="{name}"/>
  </policy>
  <policy user="root">
    <allow own="{name}"/>
  </policy>
</busconfig>
"#,
        name = spec::api::BUS_NAME
    )
}

/// Starts dbus-daemon as the system bus and waits for its socket.
pub fn start_dbus(binary: &str) -> Result<u32, BootError> {
    let conf = "/run/skerry/dbus-system.conf";
    std::fs::create_dir_all("/run/dbus").map_err(io("/run/dbus"))?;
    std::fs::write(conf, dbus_config(SYSTEM_BUS_SOCKET)).map_err(io(conf))?;
    let _ = std::fs::remove_file(SYSTEM_BUS_SOCKET);
    let child = Command::new(binary)
        .arg(format!("--config-file={conf}"))
        .arg("--nofork")
        .arg("--nopidfile")
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(binary))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(SYSTEM_BUS_SOCKET).exists() {
        if Instant::now() > deadline {
            return Err(BootError::BusTimeout {
                program: binary.to_string(),
                socket: SYSTEM_BUS_SOCKET,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Clients of this node (vmadm on the console, the rescue shell) find the bus here.
    std::env::set_var(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={SYSTEM_BUS_SOCKET}"),
    );
    Ok(child.id())
}

/// A DHCP lease as udhcpc hands it to its script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address and gateway.
    pub addr: IfaceAddr,
    /// DNS servers.
    pub dns: Vec<String>,
    /// Hostname offered.
    pub hostname: Option<String>,
}

/// Runs busybox udhcpc once on `iface` (it quits after a lease or gives up); its
/// script only records the lease, which init then applies over netlink.
pub fn dhcp(iface: &str) -> Result<Lease, BootError> {
    net::link_up(iface)?;
    let script = "/run/skerry/udhcpc.script";
    let lease_file = format!("/run/skerry/lease.{iface}");
    std::fs::write(
        script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) env > {lease_file}.tmp && mv {lease_file}.tmp {lease_file};; esac\nexit 0\n"
        ),
    )
    .map_err(io(script))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755));
    let status = Command::new("udhcpc")
        .args([
            "-i", iface, "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", script,
        ])
        .stdin(Stdio::null())
        .status()
        .map_err(io("udhcpc"))?;
    if !status.success() {
        return Err(BootError::NoLease {
            iface: iface.to_string(),
            status,
        });
    }
    let env = std::fs::read_to_string(&lease_file).map_err(io(&lease_file))?;
    parse_lease(iface, &env)
}

/// Parses the environment udhcpc gives its script.
pub fn parse_lease(iface: &str, env: &str) -> Result<Lease, BootError> {
    let vars: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let addr: Ipv4Addr = vars
        .get("ip")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BootError::LeaseWithoutAddress(iface.to_string()))?;
    let prefix = vars
        .get("mask")
        .and_then(|m| m.parse().ok())
        .or_else(|| {
            vars.get("subnet")
                .and_then(|s| super::cmdline::mask_prefix(s))
        })
        .unwrap_or(24);
    let gateway = vars
        .get("router")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok());
    Ok(Lease {
        addr: IfaceAddr {
            iface: iface.to_string(),
            addr,
            prefix,
            gateway,
        },
        dns: vars
            .get("dns")
            .map(|d| d.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        hostname: vars.get("hostname").map(|s| s.to_string()),
    })
}

/// Writes /etc/resolv.conf.
pub fn write_resolv_conf(servers: &[String]) {
    if servers.is_empty() {
        return;
    }
    let text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    if let Err(e) = std::fs::write("/etc/resolv.conf", text) {
        log::warn!("/etc/resolv.conf: {e}");
    }
}

/// Opens `/bin/sh` on the console in its own session with the console as its
/// controlling terminal, so an operator can repair what failed.
pub fn rescue_shell(why: &str) {
    crate::console::say(&format!("{why}; starting a rescue shell on the console"));
    let mut cmd = Command::new("/bin/sh");
    cmd.env("PS1", "skerry-rescue# ");
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe and only affect the
    // child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
    if let Err(e) = cmd.spawn() {
        log::error!("rescue shell /bin/sh: {e}");
    }
}

/// PID 1's duty: reap every child that dies, forever. Statuses of monitors are kept
/// for their watchers.
pub async fn reap_orphans() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        log::error!("cannot watch SIGCHLD; orphans will pile up as zombies");
        return;
    };
    loop {
        // Also poll now and then: SIGCHLDs coalesce.
        let _ = tokio::time::timeout(Duration::from_secs(5), sigchld.recv()).await;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if let Some(pid) = st.pid() {
                        watch::note_reaped(pid.as_raw() as u32, st);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udhcpc_environment_becomes_a_lease() {
        let l = parse_lease(
            "eth0",
            "interface=eth0\nip=10.0.2.15\nsubnet=255.255.255.0\nmask=24\nrouter=10.0.2.2\ndns=10.0.2.3 1.1.1.1\n",
        )
        .unwrap();
        assert_eq!(l.addr.addr, "10.0.2.15".parse::<Ipv4Addr>().unwrap());
        assert_eq!(l.addr.prefix, 24);
        assert_eq!(l.addr.gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(l.dns, vec!["10.0.2.3", "1.1.1.1"]);
        assert!(parse_lease("eth0", "interface=eth0\n").is_err());
    }

    #[test]
    fn bus_policy_lets_only_root_own_the_node_name() {
        let c = dbus_config("/x.sock");
        assert!(c.contains("<listen>unix:path=/x.sock</listen>"));
        assert!(c.contains("<deny own=\"org.skerry.Node1\"/>"));
        assert!(c.contains("<policy user=\"root\">\n    <allow own=\"org.skerry.Node1\"/>"));
    }
}
