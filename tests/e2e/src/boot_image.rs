//! The node image under test: built once per test process with `build-image/build`.

use crate::{cache_dir, repo_root, run, target_dir, E2eError, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A built boot image: `vmlinuz`, `initramfs`, `boot.ipxe`, `manifest.json` in `dir`.
#[derive(Debug, Clone)]
pub struct BootImage {
    /// The directory holding the artifacts.
    pub dir: PathBuf,
}

/// The cargo target dir of the release build inside the tests: separate from the
/// suite's own target dir, whose lock the running `cargo test` may hold.
pub fn release_target_dir() -> PathBuf {
    target_dir().join("e2e")
}

/// A `build-image/*` or `images/*` command with the environment the scripts expect.
pub fn script(path: &str) -> Command {
    let mut cmd = Command::new(repo_root().join(path));
    cmd.env("CARGO_TARGET_DIR", release_target_dir())
        .env("SKERRY_CACHE", cache_dir());
    cmd
}

/// The real node image (real init), built once: `cargo build --release` of the
/// workspace binaries, then the assembly.
pub fn node_image() -> Result<&'static BootImage> {
    static IMAGE: OnceLock<std::result::Result<BootImage, String>> = OnceLock::new();
    match IMAGE.get_or_init(|| {
        let dir = release_target_dir().join("out");
        run(script("build-image/build").arg("--out").arg(&dir))
            .map(|_| BootImage { dir })
            .map_err(|e| e.to_string())
    }) {
        Ok(image) => Ok(image),
        Err(detail) => Err(E2eError::Command {
            what: "build-image/build".into(),
            detail: detail.clone(),
        }),
    }
}

/// Assembles another image from the binaries [`node_image`] built (`--no-cargo`),
/// into `out`, optionally with a test `/init` (only for testing the pipeline itself).
pub fn assemble(out: &Path, init: Option<&Path>) -> Result<BootImage> {
    node_image()?;
    let mut cmd = script("build-image/build");
    cmd.arg("--no-cargo").arg("--out").arg(out);
    if let Some(init) = init {
        cmd.arg("--init").arg(init);
    }
    run(&mut cmd)?;
    Ok(BootImage {
        dir: out.to_path_buf(),
    })
}

/// The project's images (`images/build`: busybox, debian, debian-hvm), built once and
/// cached under `$SKERRY_CACHE/images`; returns that directory.
pub fn project_images() -> Result<&'static Path> {
    static IMAGES: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    match IMAGES.get_or_init(|| {
        run(&mut script("images/build"))
            .map(|_| cache_dir().join("images"))
            .map_err(|e| e.to_string())
    }) {
        Ok(dir) => Ok(dir.as_path()),
        Err(detail) => Err(E2eError::Command {
            what: "images/build".into(),
            detail: detail.clone(),
        }),
    }
}
