//! KVM state: [`vm`] (the VM, its guest memory, in-kernel irqchip and PIT, vCPU setup)
//! and [`vcpu`] (one thread per vCPU, dispatching exits to the buses).

pub mod vcpu;
pub mod vm;
