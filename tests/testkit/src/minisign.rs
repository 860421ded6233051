//! Keys and signatures made with the real `minisign` (Debian's package).

use crate::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A minisign key pair made by `minisign -G` (no password).
pub struct Key {
    /// The public key file.
    pub public: PathBuf,
    /// The secret key file.
    pub secret: PathBuf,
}

impl Key {
    /// Makes `NAME.pub` and `NAME.sec` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Key {
        let k = Key {
            public: dir.join(format!("{name}.pub")),
            secret: dir.join(format!("{name}.sec")),
        };
        run(Command::new(crate::program("minisign"))
            .args(["-G", "-W", "-p"])
            .arg(&k.public)
            .arg("-s")
            .arg(&k.secret));
        k
    }

    /// Signs `file` into `file.minisig`, with `comment` as the trusted comment if given.
    pub fn sign(&self, file: &Path, comment: Option<&str>) {
        let mut c = Command::new(crate::program("minisign"));
        c.arg("-S").arg("-s").arg(&self.secret).arg("-m").arg(file);
        if let Some(t) = comment {
            c.args(["-t", t]);
        }
        run(&mut c);
    }
}
