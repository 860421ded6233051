//! The virtio-pci (modern) transport: common/notify/ISR/device configuration
//! structures and an MSI-X table, all in BAR0; interrupts leave as MSIs through an [`MsiSender`].

use crate::devices::interrupt::{MsiMessage, MsiSender};
use crate::devices::pci::{ConfigSpace, PciBus, PciDevice, FIRST_CAP};
use crate::devices::virtio::{VirtioDevice, VIRTIO_F_VERSION_1};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// BAR0 size.
pub const BAR_SIZE: u32 = 0x8000;
const COMMON: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR: u64 = 0x1000;
const DEVICE_CFG: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x5000;
const REGION_LEN: u64 = 0x1000;
const MSIX_CAP: usize = FIRST_CAP;
const NO_VECTOR: u16 = 0xffff;

const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_NEEDS_RESET: u8 = 0x40;

#[derive(Clone, Copy, Default)]
struct MsixEntry {
    addr: u64,
    data: u32,
    masked: bool,
}

/// A virtio device on PCI.
pub struct VirtioPciDevice<D: VirtioDevice> {
    config: ConfigSpace,
    /// The device model.
    pub device: D,
    queues: Vec<Queue>,
    queue_vectors: Vec<u16>,
    queue_select: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_generation: u8,
    config_vector: u16,
    isr: u8,
    msix: Vec<MsixEntry>,
    pending: Vec<bool>,
    activated: bool,
    mem: GuestMemoryMmap,
    msi: Arc<dyn MsiSender>,
    warned_no_msix: bool,
    msi_failures: u32,
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: Option<u32>) -> Vec<u8> {
    let len = if extra.is_some() { 20 } else { 16 };
    let mut c = vec![0x09, 0, len, cfg_type, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(e) = extra {
        c.extend_from_slice(&e.to_le_bytes());
    }
    c
}

fn le_bytes_into(value: u64, offset_in: usize, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    for (i, d) in data.iter_mut().enumerate() {
        *d = bytes.get(offset_in + i).copied().unwrap_or(0);
    }
}

fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Wraps `device` for PCI slot `slot`; its interrupts go out through `msi`.
    pub fn new(device: D, slot: usize, mem: GuestMemoryMmap, msi: Arc<dyn MsiSender>) -> Self {
        let sizes = device.queue_sizes();
        let mut config = ConfigSpace::new(
            0x1af4,
            0x1040 + device.device_type(),
            device.pci_class(),
            1,
            Some((PciBus::bar_address(slot), BAR_SIZE)),
        );
        config.set16(0x2c, 0x1af4);
        config.set16(0x2e, 0x40 + device.device_type());
        let vectors = sizes.len() as u16 + 1;
        let mut msix_cap = vec![0x11, 0];
        msix_cap.extend_from_slice(&(vectors - 1).to_le_bytes());
        msix_cap.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes()); // BIR 0
        msix_cap.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        config.add_capability(MSIX_CAP, &msix_cap);
        config.make_writable(MSIX_CAP + 3, &[0xc0]); // enable + function mask
        config.add_capability(0x50, &vendor_cap(1, COMMON, COMMON_LEN, None));
        config.add_capability(
            0x60,
            &vendor_cap(2, NOTIFY, REGION_LEN, Some(NOTIFY_MULTIPLIER)),
        );
        config.add_capability(0x78, &vendor_cap(3, ISR, REGION_LEN, None));
        config.add_capability(0x88, &vendor_cap(4, DEVICE_CFG, REGION_LEN, None));
        let queues = sizes
            .iter()
            .map(|s| Queue::new(*s).unwrap_or_else(|_| Queue::new(256).expect("256 is valid")))
            .collect();
        VirtioPciDevice {
            config,
            device,
            queue_vectors: vec![NO_VECTOR; sizes.len()],
            queues,
            queue_select: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            config_vector: NO_VECTOR,
            isr: 0,
            msix: vec![
                MsixEntry {
                    masked: true,
                    ..Default::default()
                };
                vectors as usize
            ],
            pending: vec![false; vectors as usize],
            activated: false,
            mem,
            msi,
            warned_no_msix: false,
            msi_failures: 0,
        }
    }

    fn msix_control(&self) -> u16 {
        self.config.get16(MSIX_CAP + 2)
    }

    fn signal(&mut self, vector: u16) {
        self.isr |= 1;
        if vector == NO_VECTOR {
            return;
        }
        let control = self.msix_control();
        if control & 0x8000 == 0 {
            if !self.warned_no_msix {
                log::warn!(
                    "virtio {}: guest did not enable MSI-X; interrupts are lost",
                    self.device.name()
                );
                self.warned_no_msix = true;
            }
            return;
        }
        let v = vector as usize;
        let Some(entry) = self.msix.get(v).copied() else {
            return;
        };
        if control & 0x4000 != 0 || entry.masked {
            self.pending[v] = true;
            return;
        }
        self.pending[v] = false;
        let msg = MsiMessage {
            address: entry.addr,
            data: entry.data,
        };
        if let Err(e) = self.msi.send_msi(msg) {
            // A guest can program any address: say so a few times, not per interrupt.
            self.msi_failures += 1;
            if self.msi_failures <= 4 {
                log::warn!("virtio {}: MSI delivery failed: {e}", self.device.name());
            }
        }
    }

    fn deliver_pending(&mut self) {
        for v in 0..self.pending.len() {
            if self.pending[v] {
                self.signal(v as u16);
            }
        }
    }

    fn mark_broken(&mut self, why: &str) {
        log::error!(
            "virtio {}: {why}; the device needs a reset",
            self.device.name()
        );
        self.status |= STATUS_NEEDS_RESET;
        self.activated = false;
        self.config_generation = self.config_generation.wrapping_add(1);
        let v = self.config_vector;
        self.signal(v);
    }

    /// Processes queue `idx` and interrupts the guest if it used buffers.
    pub fn process(&mut self, idx: usize) {
        if !self.activated || idx >= self.queues.len() || !self.queues[idx].ready() {
            return;
        }
        match self
            .device
            .process_queue(idx, &mut self.queues[idx], &self.mem)
        {
            Ok(false) => {}
            Ok(true) => {
                let notify = self.queues[idx]
                    .needs_notification(&self.mem)
                    .unwrap_or(true);
                if notify {
                    let v = self.queue_vectors[idx];
                    self.signal(v);
                }
            }
            Err(e) => self.mark_broken(&e.to_string()),
        }
    }

    /// Whether the driver finished setting the device up.
    pub fn is_active(&self) -> bool {
        self.activated
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_vectors.fill(NO_VECTOR);
        self.config_vector = NO_VECTOR;
        self.driver_features = 0;
        self.status = 0;
        self.isr = 0;
        self.activated = false;
        self.device.reset();
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & STATUS_FEATURES_OK != 0 && self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            // A legacy-only driver: refuse FEATURES_OK, as the spec says.
            self.status = value & !STATUS_FEATURES_OK;
            return;
        }
        self.status = value;
        if value & STATUS_DRIVER_OK != 0 && !self.activated && value & STATUS_NEEDS_RESET == 0 {
            let bad = self
                .queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(&self.mem));
            if let Some(q) = bad {
                self.mark_broken(&format!("queue {q} has addresses outside guest memory"));
                return;
            }
            self.activated = true;
            self.device.activated();
        }
    }

    fn common_read(&mut self, off: u64, data: &mut [u8]) {
        let q = self.queues.get(self.queue_select as usize);
        let (value, base): (u64, u64) = match off {
            0x00..=0x03 => (u64::from(self.device_feature_select), 0x00),
            0x04..=0x07 => {
                let f = self.device.features();
                let v = match self.device_feature_select {
                    0 => f & 0xffff_ffff,
                    1 => f >> 32,
                    _ => 0,
                };
                (v, 0x04)
            }
            0x08..=0x0b => (u64::from(self.driver_feature_select), 0x08),
            0x0c..=0x0f => {
                let v = match self.driver_feature_select {
                    0 => self.driver_features & 0xffff_ffff,
                    1 => self.driver_features >> 32,
                    _ => 0,
                };
                (v, 0x0c)
            }
            0x10..=0x11 => (u64::from(self.config_vector), 0x10),
            0x12..=0x13 => (self.queues.len() as u64, 0x12),
            0x14 => (u64::from(self.status), 0x14),
            0x15 => (u64::from(self.config_generation), 0x15),
            0x16..=0x17 => (u64::from(self.queue_select), 0x16),
            0x18..=0x19 => (q.map_or(0, |q| u64::from(q.size())), 0x18),
            0x1a..=0x1b => (
                u64::from(
                    self.queue_vectors
                        .get(self.queue_select as usize)
                        .copied()
                        .unwrap_or(NO_VECTOR),
                ),
                0x1a,
            ),
            0x1c..=0x1d => (q.map_or(0, |q| u64::from(q.ready())), 0x1c),
            0x1e..=0x1f => (u64::from(self.queue_select), 0x1e), // notify_off = index
            0x20..=0x27 => (q.map_or(0, |q| q.desc_table()), 0x20),
            0x28..=0x2f => (q.map_or(0, |q| q.avail_ring()), 0x28),
            0x30..=0x37 => (q.map_or(0, |q| q.used_ring()), 0x30),
            _ => (0, off),
        };
        le_bytes_into(value, (off - base) as usize, data);
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        let v = le_value(data);
        let sel = self.queue_select as usize;
        match off {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0c => {
                let offered = self.device.features();
                let v = v & 0xffff_ffff;
                match self.driver_feature_select {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | (v & offered)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | ((v << 32) & offered)
                    }
                    _ => {}
                }
            }
            0x10 => self.config_vector = v as u16,
            0x14 => self.set_status(v as u8),
            0x16 => self.queue_select = v as u16,
            0x18 => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.set_size(v as u16);
                }
            }
            0x1a => {
                if let Some(qv) = self.queue_vectors.get_mut(sel) {
                    *qv = v as u16;
                }
            }
            0x1c => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.set_ready(v == 1);
                }
            }
            0x20..=0x37 => {
                let Some(q) = self.queues.get_mut(sel) else {
                    return;
                };
                let lo = off.is_multiple_of(8);
                let halves = if data.len() == 8 {
                    (Some(v as u32), Some((v >> 32) as u32))
                } else if lo {
                    (Some(v as u32), None)
                } else {
                    (None, Some(v as u32))
                };
                match off & !7 {
                    0x20 => q.set_desc_table_address(halves.0, halves.1),
                    0x28 => q.set_avail_ring_address(halves.0, halves.1),
                    _ => q.set_used_ring_address(halves.0, halves.1),
                }
            }
            _ => {}
        }
    }

    fn msix_read(&self, off: u64, data: &mut [u8]) {
        let idx = (off / 16) as usize;
        let Some(e) = self.msix.get(idx) else {
            data.fill(0);
            return;
        };
        let word = match off % 16 {
            0..=3 => e.addr & 0xffff_ffff,
            4..=7 => e.addr >> 32,
            8..=11 => u64::from(e.data),
            _ => u64::from(e.masked),
        };
        le_bytes_into(word, (off % 4) as usize, data);
    }

    fn msix_write(&mut self, off: u64, data: &[u8]) {
        let idx = (off / 16) as usize;
        let v = le_value(data);
        let Some(e) = self.msix.get_mut(idx) else {
            return;
        };
        match off % 16 {
            0 if data.len() == 8 => e.addr = v,
            0 => e.addr = (e.addr & !0xffff_ffff) | (v & 0xffff_ffff),
            4 => e.addr = (e.addr & 0xffff_ffff) | ((v & 0xffff_ffff) << 32),
            8 if data.len() == 8 => {
                e.data = v as u32;
                e.masked = (v >> 32) & 1 == 1;
            }
            8 => e.data = v as u32,
            12 => e.masked = v & 1 == 1,
            _ => {}
        }
        if !e.masked && self.pending.get(idx) == Some(&true) {
            self.signal(idx as u16);
        }
    }
}

impl<D: VirtioDevice> PciDevice for VirtioPciDevice<D> {
    fn config(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_written(&mut self, offset: usize) {
        if (MSIX_CAP..MSIX_CAP + 4).contains(&offset) {
            self.deliver_pending();
        }
    }

    fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < COMMON + COMMON_LEN => self.common_read(o - COMMON, data),
            o if (ISR..ISR + REGION_LEN).contains(&o) => {
                // Reading the ISR acknowledges it.
                data.fill(0);
                if let Some(d) = data.first_mut() {
                    *d = self.isr;
                }
                self.isr = 0;
            }
            o if (DEVICE_CFG..DEVICE_CFG + REGION_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG, data)
            }
            o if (MSIX_TABLE..MSIX_TABLE + REGION_LEN).contains(&o) => {
                self.msix_read(o - MSIX_TABLE, data)
            }
            o if (MSIX_PBA..MSIX_PBA + REGION_LEN).contains(&o) => {
                let mut bits = 0u64;
                for (i, p) in self.pending.iter().enumerate().take(64) {
                    bits |= u64::from(*p) << i;
                }
                le_bytes_into(bits, ((o - MSIX_PBA) % 8) as usize, data);
            }
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON + COMMON_LEN => self.common_write(o - COMMON, data),
            o if (NOTIFY..NOTIFY + REGION_LEN).contains(&o) => {
                let idx = ((o - NOTIFY) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if self.activated && idx < self.queues.len() && self.device.queue_notified(idx) {
                    self.process(idx);
                }
            }
            o if (MSIX_TABLE..MSIX_TABLE + REGION_LEN).contains(&o) => {
                self.msix_write(o - MSIX_TABLE, data)
            }
            _ => {}
        }
    }
}
