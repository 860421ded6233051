//! What host's kernel tests share: throwaway network namespaces.
#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Netns {
        assert!(nix::unistd::getuid().is_root(), "net tests need root");
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "skhost-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let st = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(st.unwrap().success(), "ip netns add {name}");
        Netns(name)
    }

    /// Runs `f` on a thread that has joined this namespace: [`host::link`] acts in
    /// the calling thread's namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.fd();
        std::thread::spawn(move || {
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in the namespace")
    }

    pub fn fd(&self) -> OwnedFd {
        std::fs::File::open(format!("/run/netns/{}", self.0))
            .unwrap()
            .into()
    }

    /// `ip -n NS -j ARGS` as JSON.
    pub fn ip(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-j"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.ip(&["link", "show"])
            .as_array()?
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
