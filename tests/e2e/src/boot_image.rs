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

/// Where the tests put their boot images (`<target>/e2e/`).
pub fn e2e_dir() -> PathBuf {
    target_dir().join("e2e")
}

/// A `build-image/*` or `images/*` command with the environment the scripts expect:
/// the suite's target dir (its debug binaries go into the image, and run-node serves
/// images with its `imgadm`) and the shared cache.
pub fn script(path: &str) -> Command {
    let mut cmd = Command::new(repo_root().join(path));
    cmd.env("CARGO_TARGET_DIR", target_dir())
        .env("SKERRY_IMGADM", target_dir().join(profile()).join("imgadm"))
        .env("SKERRY_CACHE", cache_dir());
    cmd
}

/// zstd level of the test images: quick to make; `build-image/build` defaults to 19.
const LEVEL: &str = "6";

/// The cargo profile whose binaries go into the test images: `debug` (default: the
/// suite has just built them, so no second compile of the workspace eats the time
/// budget) or `release` (`SKERRY_E2E_PROFILE=release`: what ships, faster inside).
pub fn profile() -> String {
    std::env::var("SKERRY_E2E_PROFILE").unwrap_or_else(|_| "debug".into())
}

/// The real node image (real init), built once per test process from the binaries of
/// [`profile`].
pub fn node_image() -> Result<&'static BootImage> {
    static IMAGE: OnceLock<std::result::Result<BootImage, String>> = OnceLock::new();
    match IMAGE.get_or_init(|| {
        let dir = e2e_dir().join("out");
        run(script("build-image/build")
            .args(["--profile", &profile(), "--level", LEVEL, "--out"])
            .arg(&dir))
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
    assemble_with(out, init, &[])
}

/// [`assemble`] with more `build-image/build` arguments (`--manifest-key FILE`...).
pub fn assemble_with(
    out: &Path,
    init: Option<&Path>,
    extra: &[&std::ffi::OsStr],
) -> Result<BootImage> {
    node_image()?;
    let mut cmd = script("build-image/build");
    cmd.args([
        "--profile",
        &profile(),
        "--level",
        LEVEL,
        "--no-cargo",
        "--out",
    ])
    .arg(out);
    if let Some(init) = init {
        cmd.arg("--init").arg(init);
    }
    cmd.args(extra);
    run(&mut cmd)?;
    Ok(BootImage {
        dir: out.to_path_buf(),
    })
}

/// The project's images (`images/build`: busybox, debian, debian-hvm,
/// debian-cloudinit-hvm), built once and cached under `$SKERRY_CACHE/images`; returns
/// that directory.
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
