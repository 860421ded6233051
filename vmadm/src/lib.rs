//! vmadm: the operator CLI.

pub mod validate;
