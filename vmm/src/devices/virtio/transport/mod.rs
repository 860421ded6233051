//! virtio transports: how a driver finds a device model and its queues.

pub mod pci;
