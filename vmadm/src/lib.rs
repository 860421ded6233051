//! vmadm: the operator CLI of a skerry node, SmartOS style.
//!
//! A client of init's `org.skerry.Node1` D-Bus API ([`client`]); `validate` works
//! offline ([`validate`]). The binary is [`commands::run`] and nothing else.

pub mod cli;
pub mod client;
pub mod commands;
pub mod console;
pub mod filter;
pub mod metrics;
pub mod node_info;
pub mod payload;
pub mod record;
pub mod suggest;
pub mod validate;
