//! Host-side tap plumbing for virtio-net ([`tap`]): opening taps, plugging them into
//! bridges. It is host plumbing, not a device model: the device models live in
//! [`crate::devices::virtio`], and [`crate::device_manager`] calls this to give a
//! virtio-net device its tap.

pub mod tap;
