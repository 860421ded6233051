//! The node's identity where its firmware gives none: `/etc/machine-id`, kept in the
//! pool so that a node keeps it across reboots of its immutable image. `sysinfo` reads
//! the SMBIOS system UUID first and this file second, as SmartOS's `UUID` is the
//! firmware's; QEMU without `-uuid` and some boards have none.

use super::error::{io, BootError};
use std::path::Path;

/// The pool's copy, under `config/`.
pub const POOL_FILE: &str = "machine-id";

/// A machine id: 32 lower-case hex digits.
fn valid(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn read_id(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    let id = text.trim().to_string();
    valid(&id).then_some(id)
}

/// Makes `etc` (`/etc/machine-id`) hold the node's id: the one already there, else
/// the pool's (`<config>/machine-id`), else a new random one, saved in the pool when
/// there is one. Returns the id.
pub fn ensure_machine_id(config: Option<&Path>, etc: &Path) -> Result<String, BootError> {
    if let Some(id) = read_id(etc) {
        return Ok(id);
    }
    let kept = config.and_then(|c| read_id(&c.join(POOL_FILE)));
    let id = match kept {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            match config {
                Some(c) => {
                    std::fs::create_dir_all(c).map_err(io(c.display()))?;
                    let file = c.join(POOL_FILE);
                    spec::atomic::write_atomic(&file, format!("{id}\n").as_bytes())
                        .map_err(io(file.display()))?;
                }
                None => log::warn!("no pool: this node's machine id lasts until it reboots"),
            }
            id
        }
    };
    if let Some(dir) = etc.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    }
    std::fs::write(etc, format!("{id}\n")).map_err(io(etc.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_kept_in_the_pool_and_given_back_after_a_reboot() {
        let pool = tempfile::tempdir().unwrap();
        let config = pool.path().join("config");
        let first_boot = tempfile::tempdir().unwrap();
        let etc = first_boot.path().join("etc/machine-id");
        let id = ensure_machine_id(Some(&config), &etc).unwrap();
        assert!(valid(&id), "{id}");
        assert_eq!(read_id(&etc).as_deref(), Some(id.as_str()));
        assert_eq!(
            read_id(&config.join(POOL_FILE)).as_deref(),
            Some(id.as_str())
        );
        // A reboot: a fresh /etc (the image is immutable), the same pool.
        let second_boot = tempfile::tempdir().unwrap();
        let etc2 = second_boot.path().join("etc/machine-id");
        assert_eq!(ensure_machine_id(Some(&config), &etc2).unwrap(), id);
        // A damaged pool copy is replaced, not served.
        std::fs::write(config.join(POOL_FILE), "not an id\n").unwrap();
        let third = tempfile::tempdir().unwrap();
        let new = ensure_machine_id(Some(&config), &third.path().join("machine-id")).unwrap();
        assert!(valid(&new) && new != id);
    }
}
