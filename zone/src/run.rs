//! `zone run`: one throwaway zone in the foreground, like `crun run` or
//! `systemd-nspawn --volatile`. The image is the read-only lower layer under a tmpfs
//! upper layer; stdio is attached (through a pty when stdin is a terminal); the exit
//! status is the command's; nothing is left behind.

use crate::cgroups::{Hierarchy, Limits};
use crate::console::Pty;
use crate::error::{Context, Result, ZoneError};
use crate::idmap::RangeLease;
use crate::launch::{self, LaunchSpec, Zone};
use crate::net::NicPlan;
use crate::rootfs::{Stage, Upper};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Instant;

/// What `zone run` was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The image rootfs (left untouched).
    pub rootfs: PathBuf,
    /// Default: `zone`.
    pub hostname: Option<String>,
    /// Memory cap in bytes.
    pub memory: Option<u64>,
    /// Maximum tasks.
    pub pids: Option<u64>,
    /// Percent of one CPU, 0 = no cap.
    pub cpu_cap: u32,
    /// Size of the temporary writable layer in bytes (writes past it fail with ENOSPC).
    pub quota: Option<u64>,
    /// Nics: `net0`, `net1`, ... in order.
    pub nics: Vec<spec::Nic>,
    /// Command and arguments.
    pub command: Vec<String>,
}

/// Signals `zone run` forwards to the zone instead of dying from them.
fn forwarded() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        s.add(sig);
    }
    s
}

/// Runs the zone to completion and returns the exit status to exit with.
pub fn run(opts: &RunOptions) -> Result<i32> {
    crate::timing::mark("start");
    crate::rootfs::check_rootfs(&opts.rootfs)?;
    let lease = RangeLease::acquire()?;
    let hierarchy = Hierarchy::detect()?;
    let pid = std::process::id();
    launch::prepare_runtime()?;
    // Over the temp dir, in our private mount namespace: see `Stage::over`.
    let mut stage = Stage::over(std::env::temp_dir());
    crate::timing::mark("idrange+detect+mountns");
    // A synthetic per-run "uuid" names the host ends of the veths.
    let tag_id = format!("{:08x}", pid.wrapping_mul(2_654_435_761) ^ nanos());
    let nics = opts
        .nics
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            NicPlan::new(
                &tag_id,
                i,
                nic,
                monitor::default_bridge_name(&nic.tag),
                None,
            )
        })
        .collect();
    let spec = LaunchSpec {
        name: format!("run-{pid}"),
        image: opts.rootfs.clone(),
        upper: Upper::Temporary { size: opts.quota },
        idmap: lease.map,
        hostname: opts.hostname.clone().unwrap_or_else(|| "zone".into()),
        command: opts.command.clone(),
        env: vec![],
        workdir: None,
        user: None,
        limits: Limits {
            memory: opts.memory,
            cpu_cap: opts.cpu_cap,
            pids: opts.pids,
        },
        nics,
        resolvers: vec![],
        die_with_runtime: true,
        metadata: None,
    };
    let tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let pty = if tty {
        Some(Pty::open(lease.map.host_id(0))?)
    } else {
        None
    };
    // Blocked before the fork so none is lost; the zone init unblocks them.
    let sigs = forwarded();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None)
        .ctx(|| "sigprocmask".into())?;
    let result = launch::start(&spec, &mut stage, &hierarchy, pty.as_ref()).and_then(|mut zone| {
        let waited = supervise(&mut zone, pty.as_ref(), &sigs);
        crate::timing::mark("command");
        let cleaned = zone.cleanup();
        crate::timing::mark("cleanup-cgroup+net");
        let code = waited?;
        cleaned?;
        Ok(code)
    });
    // No unmount: the staging mounts go with our mount namespace when we exit, which
    // spares the RCU grace period an explicit unmount waits for.
    drop(stage);
    crate::timing::report();
    result
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Waits for the zone, forwarding signals and (with a pty) relaying the terminal.
fn supervise(zone: &mut Zone, pty: Option<&Pty>, sigs: &SigSet) -> Result<i32> {
    let sfd = SignalFd::with_flags(sigs, SfdFlags::SFD_CLOEXEC).ctx(|| "signalfd".into())?;
    let _raw = match pty {
        Some(p) => Some(RawTerminal::enter(p)?),
        None => None,
    };
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut signalled = 0;
    loop {
        let mut fds = vec![
            PollFd::new(zone.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(p) = pty {
            fds.push(PollFd::new(p.master.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        let snoop_at = fds.len();
        fds.extend(
            zone.snoop_fds()
                .into_iter()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        // Until the first DHCP lease ends, or a snooper has something.
        let timeout = zone.next_snoop().map_or(PollTimeout::NONE, |end| {
            let ms = end.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::try_from(ms.min(60_000) as i32 + 1).unwrap_or(PollTimeout::NONE)
        });
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.ctx(|| "poll".into())?,
        };
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let lease_due = zone.next_snoop().is_some_and(|end| end <= Instant::now());
        if ready[snoop_at..].contains(&true) || lease_due {
            for note in zone.snoop(Instant::now()) {
                eprintln!("zone: {note}");
            }
        }
        if ready[1] {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
                if sig == Signal::SIGWINCH {
                    if let Some(p) = pty {
                        copy_winsize(p);
                    }
                } else {
                    signalled += 1;
                    // A zone init ignores signals it has no handler for: insist.
                    zone.signal(if signalled > 1 { Signal::SIGKILL } else { sig })?;
                }
            }
        }
        if let Some(p) = pty {
            if ready[2..snoop_at].first() == Some(&true) && !relay(p.master.as_fd(), 1) {
                // EIO: every slave fd is closed, the zone is going away.
            }
            if stdin_open
                && ready[2..snoop_at].get(1) == Some(&true)
                && !relay(stdin.as_fd(), p.master.as_raw_fd())
            {
                stdin_open = false;
            }
        }
        if ready[0] {
            let exit = zone
                .try_wait(true)?
                .ok_or_else(|| ZoneError::Setup("zone init vanished".into()))?;
            if let Some(p) = pty {
                // Drain what is buffered; our own slave fd keeps the master from EOF.
                loop {
                    let mut fds = [PollFd::new(p.master.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
                        || !relay(p.master.as_fd(), 1)
                    {
                        break;
                    }
                }
            }
            return Ok(exit.code());
        }
    }
}

/// Copies one chunk from `from` to fd `to`; false on EOF or error.
fn relay(from: BorrowedFd<'_>, to: i32) -> bool {
    let mut buf = [0u8; 8192];
    let n = match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(_) => return false,
        Ok(n) => n,
    };
    // SAFETY: `to` is a live fd (stdout or the pty master) for the duration of the call.
    let to = unsafe { BorrowedFd::borrow_raw(to) };
    let mut off = 0;
    while off < n {
        match nix::unistd::write(to, &buf[off..n]) {
            Ok(w) => off += w,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn copy_winsize(pty: &Pty) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write a winsize struct we own.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// The host terminal in raw mode for as long as this lives.
struct RawTerminal {
    saved: termios::Termios,
}

impl RawTerminal {
    fn enter(pty: &Pty) -> Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ctx(|| "tcgetattr".into())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).ctx(|| "tcsetattr".into())?;
        copy_winsize(pty);
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Parses `--net TAG=IP/PREFIX[,OPTION...]` (or `TAG=dhcp[,...]`) into nic
/// `net<index>`. Options are the manifest's nic switches (`allow-ip-spoofing`,
/// `allow-mac-spoofing`, `allow-dhcp-spoofing`, `allow-restricted-traffic`) and
/// `vlan=N`.
pub fn parse_net(index: usize, arg: &str) -> Result<spec::Nic> {
    let bad = || {
        ZoneError::Invalid(format!(
            "bad --net {arg:?}: expected TAG=IP/PREFIX or TAG=dhcp, then ,OPTION...: \
             e.g. admin=10.88.0.10/24,vlan=20,allow-dhcp-spoofing"
        ))
    };
    let mut parts = arg.split(',');
    let (tag, addr) = parts.next().unwrap_or("").split_once('=').ok_or_else(bad)?;
    if tag.is_empty() {
        return Err(bad());
    }
    let ip = match addr {
        "dhcp" => spec::IpConfig::Dhcp,
        cidr => {
            let (addr, prefix) = spec::format::parse_cidr(cidr).map_err(|_| bad())?;
            spec::IpConfig::Static { addr, prefix }
        }
    };
    let mut nic = spec::Nic::new(format!("net{index}"), tag, ip);
    for option in parts {
        match option {
            "allow-ip-spoofing" => nic.allow.ip_spoofing = true,
            "allow-mac-spoofing" => nic.allow.mac_spoofing = true,
            "allow-dhcp-spoofing" => nic.allow.dhcp_spoofing = true,
            "allow-restricted-traffic" => nic.allow.restricted_traffic = true,
            other => {
                nic.vlan = other
                    .strip_prefix("vlan=")
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v <= spec::MAX_VLAN)
                    .ok_or_else(bad)?
            }
        }
    }
    Ok(nic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::format::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
    }

    #[test]
    fn nets() {
        let n = parse_net(1, "admin=10.88.0.10/24").unwrap();
        assert_eq!(n.name, "net1");
        assert_eq!(n.tag, "admin");
        assert!(parse_net(0, "admin").is_err());
        assert_eq!(parse_net(0, "admin=dhcp").unwrap().ip, spec::IpConfig::Dhcp);
        assert!(parse_net(0, "admin=10.0.0.1/40").is_err());
        let n = parse_net(0, "admin=dhcp,vlan=20,allow-dhcp-spoofing").unwrap();
        assert_eq!((n.vlan, n.allow.dhcp_spoofing), (20, true));
        assert!(parse_net(0, "admin=dhcp,vlan=4095").is_err());
        assert!(parse_net(0, "admin=dhcp,allow-everything").is_err());
    }
}
