//! Runs untrusted-input parsing in a forked child with as little power as Linux
//! allows a process to keep: only the descriptor it reads and the pipe it writes
//! stay open, its ids drop to an unprivileged user (which clears every capability),
//! no new privileges, an address-space limit, a seccomp filter without `open`,
//! `socket` or `exec`, and it dies with its parent. The parent reads its output with
//! a deadline and kills it when done or late.
//!
//! The child of a multi-threaded process may only rely on what fork keeps consistent:
//! it takes no lock besides the allocator's (which glibc resets at fork), and never
//! logs or touches stdio.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::ExtractOptions;

/// Address space the child may add to what it inherits.
const EXTRA_ADDRESS_SPACE: u64 = 1 << 30;

/// System calls the reader makes: reading its disk, writing its pipe, memory, exit.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_close,
    // std checks a descriptor's flags before closing it (debug builds).
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_sched_yield,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_capget,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn filter() -> io::Result<BpfProgram> {
    let rules = ALLOWED.iter().map(|c| (*c, vec![])).collect();
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(io::Error::other)?;
    f.try_into().map_err(io::Error::other)
}

/// Runs `work` in a sandboxed child with `disk` and the write end of a pipe, and
/// `read` here on the read end (which times out after `opts.limits.time`). Returns
/// what `read` returned and how the child ended (it is killed once `read` returns
/// and the pipe closes, or the deadline passes).
pub fn run_sandboxed<T>(
    opts: &ExtractOptions,
    disk: File,
    work: impl FnOnce(File, &mut dyn Write) -> io::Result<()>,
    read: impl FnOnce(&mut dyn Read) -> T,
) -> io::Result<(T, WaitStatus)> {
    // Everything that allocates or reads files happens before the fork.
    let prog = filter()?;
    let vsz = std::fs::read_to_string("/proc/self/statm")?
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_mul(4096);
    let address_space = vsz.saturating_add(EXTRA_ADDRESS_SPACE);
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (uid, gid) = (opts.uid, opts.gid);
    // SAFETY: the child runs only `child_main`, which takes no lock but the
    // allocator's (reset by glibc at fork) and ends with _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(rx);
            child_main(disk, tx, uid, gid, address_space, &prog, work)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            drop(disk);
            let mut input = DeadlineReader {
                fd: rx,
                deadline: Instant::now() + opts.limits.time,
            };
            let out = read(&mut input);
            // A child that sent everything exits on its own: wait a moment for its end
            // of the pipe to close (a little more output is tolerated), then make sure.
            input.deadline = input.deadline.min(Instant::now() + Duration::from_secs(1));
            let _ = io::copy(&mut (&mut input).take(1 << 16), &mut io::sink());
            let _ = kill(child, Signal::SIGKILL);
            let status = waitpid(child, None)?;
            Ok((out, status))
        }
    }
}

fn child_main(
    disk: File,
    out: OwnedFd,
    uid: u32,
    gid: u32,
    address_space: u64,
    prog: &BpfProgram,
    work: impl FnOnce(File, &mut dyn Write) -> io::Result<()>,
) -> ! {
    if let Err(step) = lock_down(&disk, &out, uid, gid, address_space, prog) {
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(step) }
    }
    let mut w = io::BufWriter::with_capacity(super::frames::CHUNK + 5, File::from(out));
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        work(disk, &mut w).and_then(|_| w.flush())
    }));
    let code = match ok {
        Ok(Ok(())) => 0,
        Ok(Err(_)) => 1,
        Err(_) => 101,
    };
    // `w` is still open here: the parent sees the pipe close only once the child is
    // exiting, so killing it after that cannot change its status.
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// Returns the failing step's exit code.
fn lock_down(
    disk: &File,
    out: &OwnedFd,
    uid: u32,
    gid: u32,
    address_space: u64,
    prog: &BpfProgram,
) -> Result<(), i32> {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    close_all_but(&[disk.as_raw_fd(), out.as_fd().as_raw_fd()]);
    let limit = libc::rlimit {
        rlim_cur: address_space,
        rlim_max: address_space,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(10);
    }
    if nix::unistd::geteuid().is_root() {
        nix::unistd::setgroups(&[]).map_err(|_| 11)?;
        let (g, u) = (
            nix::unistd::Gid::from_raw(gid),
            nix::unistd::Uid::from_raw(uid),
        );
        nix::unistd::setresgid(g, g, g).map_err(|_| 12)?;
        // Without PR_SET_KEEPCAPS, leaving uid 0 clears every capability set.
        nix::unistd::setresuid(u, u, u).map_err(|_| 13)?;
        // Changing credentials cleared the parent-death signal.
        // SAFETY: plain prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }
    // Sets no_new_privs first.
    seccompiler::apply_filter(prog).map_err(|_| 14)?;
    Ok(())
}

fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().map(|f| *f as u32).collect();
    keep.sort_unstable();
    let mut from = 0u32;
    for k in keep {
        if k > from {
            // SAFETY: closes descriptors of this (forked, single-threaded) child only.
            unsafe { libc::close_range(from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::close_range(from, u32::MAX, 0) };
}

/// Reads from a pipe until a deadline.
struct DeadlineReader {
    fd: OwnedFd,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            let ms = left.min(Duration::from_secs(10)).as_millis().max(1) as u16;
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => return Ok(nix::unistd::read(&self.fd, buf)?),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootdisk::Limits;

    fn opts(uid: u32, time: Duration) -> ExtractOptions {
        ExtractOptions {
            uid,
            gid: uid + 1,
            limits: Limits {
                time,
                ..Limits::default()
            },
        }
    }

    #[test]
    fn the_reader_runs_unprivileged_without_capabilities() {
        let disk = File::open("/proc/self/exe").unwrap();
        let (text, status) = run_sandboxed(
            &opts(4_000_123, Duration::from_secs(10)),
            disk,
            |_, out| {
                let (mut r, mut e, mut s) = (0, 0, 0);
                let (mut gr, mut ge, mut gs) = (0, 0, 0);
                // SAFETY: the out-pointers are valid locals.
                unsafe {
                    libc::getresuid(&mut r, &mut e, &mut s);
                    libc::getresgid(&mut gr, &mut ge, &mut gs);
                }
                // capget v3: header (version, pid), then two {effective, permitted,
                // inheritable} triples.
                let mut hdr: [u32; 2] = [0x2008_0522, 0];
                let mut data = [0u32; 6];
                // SAFETY: header and data buffers of the sizes capget v3 writes.
                unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) };
                let caps = data[0] | data[1] | data[3] | data[4];
                write!(out, "{r} {e} {s} {gr} {ge} {gs} {caps}")
            },
            |input| {
                let mut s = String::new();
                input.read_to_string(&mut s).map(|_| s)
            },
        )
        .unwrap();
        assert_eq!(status, WaitStatus::Exited(status.pid().unwrap(), 0));
        assert_eq!(
            text.unwrap(),
            "4000123 4000123 4000123 4000124 4000124 4000124 0"
        );
    }

    #[test]
    fn opening_a_file_kills_the_reader() {
        let disk = File::open("/proc/self/exe").unwrap();
        let (_, status) = run_sandboxed(
            &opts(4_000_123, Duration::from_secs(10)),
            disk,
            |_, _| File::open("/etc/hostname").map(drop),
            |input| input.read_to_end(&mut Vec::new()),
        )
        .unwrap();
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "{status:?}"
        );
    }

    #[test]
    fn a_slow_reader_is_cut_off() {
        let disk = File::open("/proc/self/exe").unwrap();
        let t = Instant::now();
        let (res, status) = run_sandboxed(
            &opts(4_000_123, Duration::from_millis(300)),
            disk,
            |_, _| loop {
                std::hint::spin_loop();
            },
            |input| input.read_to_end(&mut Vec::new()),
        )
        .unwrap();
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            status,
            WaitStatus::Signaled(_, Signal::SIGKILL, _)
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
