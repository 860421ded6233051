//! virtio-blk on a raw image file: reads, writes, flush (fsync), device id; a
//! read-only disk fails writes with an I/O error status.

use crate::devices::virtio::{read_config_bytes, VirtioDevice, VirtioError, VIRTIO_F_VERSION_1};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

const SECTOR: u64 = 512;
const QUEUE_SIZE: u16 = 256;
const SEG_MAX: u32 = 126;
/// Largest request we accept (guests send at most a few MiB).
const MAX_REQUEST: usize = 32 << 20;

const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Why a disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image file could not be opened (missing, or not writable for a rw disk).
    #[error("opening disk {path}")]
    Open {
        /// The image file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The image's size could not be read.
    #[error("reading the size of disk {path}")]
    Size {
        /// The image file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A virtio-blk disk backed by a file.
pub struct Block {
    file: File,
    path: String,
    read_only: bool,
    sectors: u64,
    complaints: u32,
}

/// Why a request could not be parsed (the guest's fault).
#[derive(Debug)]
struct BadRequest(String);

impl Block {
    /// Opens the raw image at `path` (read-only when asked: guest writes then fail).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| BlockError::Size {
                path: path.to_owned(),
                source,
            })?
            .len();
        Ok(Block {
            file,
            path: path.display().to_string(),
            read_only,
            sectors: len / SECTOR,
            complaints: 0,
        })
    }

    fn in_range(&self, sector: u64, len: usize) -> bool {
        sector
            .checked_mul(SECTOR)
            .and_then(|o| o.checked_add(len as u64))
            .is_some_and(|end| end <= self.sectors * SECTOR)
    }

    /// Runs one request; returns the bytes written into guest buffers.
    fn handle(
        &mut self,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, BadRequest> {
        let bad = |what: &str| BadRequest(what.to_owned());
        let mut reader = Reader::new(mem, chain.clone())
            .map_err(|e| bad(&format!("readable descriptors: {e}")))?;
        let mut writer =
            Writer::new(mem, chain).map_err(|e| bad(&format!("writable descriptors: {e}")))?;
        let mut header = [0u8; 16];
        reader
            .read_exact(&mut header)
            .map_err(|_| bad("request header shorter than 16 bytes"))?;
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let writable = writer.available_bytes();
        if writable == 0 {
            return Err(bad("no writable status byte"));
        }
        let mut status_writer = writer
            .split_at(writable - 1)
            .map_err(|e| bad(&format!("splitting off the status byte: {e}")))?;
        let status = match kind {
            T_IN => {
                let len = writable - 1;
                if len > MAX_REQUEST || !self.in_range(sector, len) {
                    S_IOERR
                } else {
                    let mut buf = vec![0u8; len];
                    match self.file.read_exact_at(&mut buf, sector * SECTOR) {
                        Ok(()) => {
                            writer
                                .write_all(&buf)
                                .map_err(|e| bad(&format!("writing read data: {e}")))?;
                            S_OK
                        }
                        Err(e) => {
                            log::warn!("virtio-blk {}: read at sector {sector}: {e}", self.path);
                            S_IOERR
                        }
                    }
                }
            }
            T_OUT => {
                let len = reader.available_bytes();
                if self.read_only || len > MAX_REQUEST || !self.in_range(sector, len) {
                    S_IOERR
                } else {
                    let mut buf = vec![0u8; len];
                    reader
                        .read_exact(&mut buf)
                        .map_err(|e| bad(&format!("reading write data: {e}")))?;
                    match self.file.write_all_at(&buf, sector * SECTOR) {
                        Ok(()) => S_OK,
                        Err(e) => {
                            log::warn!("virtio-blk {}: write at sector {sector}: {e}", self.path);
                            S_IOERR
                        }
                    }
                }
            }
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => S_OK,
                Err(e) => {
                    log::warn!("virtio-blk {}: flush: {e}", self.path);
                    S_IOERR
                }
            },
            T_GET_ID => {
                let mut id = [0u8; 20];
                let name = b"skerry-disk";
                id[..name.len()].copy_from_slice(name);
                let n = (writable - 1).min(id.len());
                writer
                    .write_all(&id[..n])
                    .map_err(|e| bad(&format!("writing id: {e}")))?;
                S_OK
            }
            _ => S_UNSUPP,
        };
        status_writer
            .write_all(&[status])
            .map_err(|e| bad(&format!("writing status: {e}")))?;
        Ok((writer.bytes_written() + 1) as u32)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        2
    }

    fn pci_class(&self) -> u32 {
        0x01_80_00 // mass storage, other
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { F_RO } else { 0 };
        VIRTIO_F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; 24];
        cfg[0..8].copy_from_slice(&self.sectors.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        cfg[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        read_config_bytes(&cfg, offset, data);
    }

    fn process_queue(
        &mut self,
        idx: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = match self.handle(chain, mem) {
                Ok(n) => n,
                Err(BadRequest(why)) => {
                    self.complaints += 1;
                    if self.complaints <= 8 {
                        log::warn!(
                            "virtio-blk {}: bad request from the guest: {why}",
                            self.path
                        );
                    }
                    0
                }
            };
            queue
                .add_used(mem, head, len)
                .map_err(|source| VirtioError::Queue { queue: idx, source })?;
            used = true;
        }
        Ok(used)
    }

    fn name(&self) -> String {
        format!("blk {}", self.path)
    }
}
