//! The names a manifest may use: instance kinds, their properties, nic and disk fields.

/// Top-level node names.
pub const KINDS: &[&str] = &["zone", "hvm"];

/// Properties of a `zone` node.
pub const ZONE_PROPS: &[&str] = &[
    "image",
    "memory",
    "cpu-cap",
    "pids",
    "quota",
    "hostname",
    "autoboot",
    "init",
    "env",
    "nic",
    "resolver",
    "metadata",
    "user-script",
    "user-data",
    "ssh-key",
    "firewall",
    "uuid",
    "ensure",
];

/// Properties of an `hvm` node.
pub const HVM_PROPS: &[&str] = &[
    "image",
    "vcpus",
    "cpu-cap",
    "memory",
    "disk",
    "nic",
    "cmdline",
    "autoboot",
    "resolver",
    "metadata",
    "user-script",
    "user-data",
    "ssh-key",
    "firewall",
    "uuid",
    "ensure",
];

/// Properties (`key=value`) of a `nic` node.
pub const NIC_FIELDS: &[&str] = &[
    "tag",
    "ip",
    "gateway",
    "mtu",
    "mac",
    "vlan",
    "allow-ip-spoofing",
    "allow-mac-spoofing",
    "allow-dhcp-spoofing",
    "allow-restricted-traffic",
];

/// Properties (`key=value`) of a `disk` node.
pub const DISK_FIELDS: &[&str] = &["boot", "size"];

/// Properties that may appear more than once in an instance.
pub const REPEATABLE: &[&str] = &["env", "nic", "resolver", "disk", "ssh-key"];

/// Smallest and largest nic MTU (the range SmartOS accepts).
pub const MTU_RANGE: (u32, u32) = (576, 9000);

/// Largest vCPU count of an HVM instance.
pub const MAX_VCPUS: u32 = 255;
