//! SmartOS `vmadm` property names: which exist, for which brands and actions, and
//! what type their values take (after SmartOS's own `proptable.js`).

/// Which brands a property applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every brand.
    All,
    /// joyent, joyent-minimal, lx.
    Zone,
    /// kvm, bhyve.
    Hvm,
    /// bhyve only.
    Bhyve,
}

/// When a property may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `vmadm create` and `vmadm update`.
    Both,
    /// Only at creation.
    Create,
    /// Only in an update.
    Update,
}

/// The shape of a property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A string.
    Str,
    /// A boolean, or the strings "true" / "false".
    Bool,
    /// A whole number (or a string of digits) within the range.
    Int(i64, i64),
    /// A UUID string.
    Uuid,
    /// An array of strings.
    StrList,
    /// A string, or an array of strings.
    StrOrList,
    /// An object of string, number or boolean values (metadata, tags).
    ScalarMap,
    /// An array of IP address strings.
    IpList,
    /// `fs_allowed`: a comma-separated string, or an array of names without commas.
    FsAllowed,
    /// The zpool: only `zones` exists on a skerry node.
    Zpool,
    /// An instance name (alias).
    Alias,
    /// A host name.
    Hostname,
    /// An array of objects, each checked against a sub-table.
    Objects(Sub),
    /// An object of any values (routes and the like).
    Map,
    /// An array of whole numbers (ports).
    IntList,
}

/// Which sub-table the objects of a list are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// `nics`, `add_nics`.
    Nic,
    /// `update_nics`: a nic named by its `mac`.
    NicUpdate,
    /// `disks`, `add_disks`.
    Disk,
    /// `update_disks`: a disk named by its `path`.
    DiskUpdate,
    /// `filesystems`.
    Filesystem,
    /// `pci_devices` (bhyve).
    PciDevice,
}

/// One top-level property.
#[derive(Debug, Clone, Copy)]
pub struct Prop {
    /// SmartOS name.
    pub name: &'static str,
    /// Its value's shape.
    pub ty: Ty,
    /// The brands it applies to.
    pub scope: Scope,
    /// The actions it is accepted in.
    pub when: When,
}

const fn p(name: &'static str, ty: Ty, scope: Scope, when: When) -> Prop {
    Prop {
        name,
        ty,
        scope,
        when,
    }
}

use Scope::{All, Bhyve, Hvm, Zone};
use Ty::*;
use When::{Both, Create, Update};

const U32: i64 = u32::MAX as i64;
const I64: i64 = i64::MAX;

/// Every top-level property skerry accepts in a payload. Those without a skerry
/// counterpart are checked for shape and otherwise have no effect (see
/// manifests/README.md).
pub const PROPS: &[Prop] = &[
    p("alias", Alias, All, Both),
    p("archive_on_delete", Bool, All, Both),
    p("autoboot", Bool, All, Both),
    p("billing_id", Uuid, All, Both),
    p("brand", Str, All, Create),
    p("cpu_cap", Int(0, U32), All, Both),
    p("cpu_shares", Int(0, U32), All, Both),
    p("create_timestamp", Str, All, Create),
    p("customer_metadata", ScalarMap, All, Create),
    p("datasets", StrList, Zone, Create),
    p("delegate_dataset", Bool, Zone, Create),
    p("dns_domain", Str, Zone, Both),
    p("do_not_inventory", Bool, All, Both),
    p("filesystems", Objects(Sub::Filesystem), Zone, Create),
    p("firewall_enabled", Bool, All, Both),
    p("fs_allowed", FsAllowed, Zone, Both),
    p("hostname", Hostname, All, Both),
    p("image_uuid", Uuid, All, Create),
    p("indestructible_delegated", Bool, Zone, Both),
    p("indestructible_zoneroot", Bool, All, Both),
    p("internal_metadata", ScalarMap, All, Create),
    p("internal_metadata_namespaces", StrList, All, Both),
    p("kernel_version", Str, Zone, Both),
    p("limit_priv", StrOrList, Zone, Both),
    p("maintain_resolvers", Bool, All, Both),
    p("max_locked_memory", Int(0, I64), All, Both),
    p("max_lwps", Int(1, I64), All, Both),
    p("max_msg_ids", Int(0, I64), Zone, Both),
    p("max_physical_memory", Int(16, I64 >> 20), All, Both),
    p("max_sem_ids", Int(0, I64), Zone, Both),
    p("max_shm_ids", Int(0, I64), Zone, Both),
    p("max_shm_memory", Int(0, I64), Zone, Both),
    p("max_swap", Int(256, I64), All, Both),
    p("mdata_exec_timeout", Int(0, I64), Zone, Both),
    p("nics", Objects(Sub::Nic), All, Create),
    p("nowait", Bool, All, Both),
    p("owner_uuid", Uuid, All, Both),
    p("package_name", Str, All, Both),
    p("package_version", Str, All, Both),
    p("quota", Int(0, I64 >> 30), All, Both),
    p("ram", Int(16, I64 >> 20), All, Both),
    p("resolvers", IpList, All, Both),
    p("routes", Map, All, Both),
    p("server_uuid", Uuid, All, Create),
    p("tags", ScalarMap, All, Create),
    p("tmpfs", Int(0, I64), Zone, Both),
    p("uuid", Uuid, All, Create),
    p("zfs_data_compression", Str, All, Both),
    p("zfs_data_recsize", Int(512, 1 << 20), All, Both),
    p("zfs_filesystem_limit", Int(0, I64), All, Both),
    p("zfs_io_priority", Int(0, 16383), All, Both),
    p("zfs_root_compression", Str, All, Both),
    p("zfs_root_recsize", Int(512, 1 << 20), All, Both),
    p("zfs_snapshot_limit", Int(0, I64), All, Both),
    p("zfs_storage_pool_name", Str, All, Create),
    p("zlog_max_size", Int(0, I64), Zone, Both),
    p("zonename", Str, All, Create),
    p("zonepath", Str, All, Create),
    p("zpool", Zpool, All, Create),
    // HVM (kvm, bhyve)
    p("boot", Str, Hvm, Both),
    p("boot_timeout", Int(0, I64), Hvm, Both),
    p("bootrom", Str, Bhyve, Both),
    p("bhyve_extra_opts", Str, Bhyve, Both),
    p("cpu_type", Str, Hvm, Both),
    p("disk_driver", Str, Hvm, Both),
    p("disks", Objects(Sub::Disk), Hvm, Create),
    p("flexible_disk_size", Int(0, I64), Bhyve, Both),
    p("nic_driver", Str, Hvm, Both),
    p("pci_devices", Objects(Sub::PciDevice), Bhyve, Create),
    p("qemu_extra_opts", Str, Hvm, Both),
    p("qemu_opts", Str, Hvm, Both),
    p("spice_opts", Str, Hvm, Both),
    p("spice_password", Str, Hvm, Both),
    p("spice_port", Int(-1, 65535), Hvm, Both),
    p("vcpus", Int(1, 255), Hvm, Both),
    p("vga", Str, Hvm, Both),
    p("virtio_txburst", Int(0, I64), Hvm, Both),
    p("virtio_txtimer", Int(0, I64), Hvm, Both),
    p("vnc_password", Str, Hvm, Both),
    p("vnc_port", Int(-1, 65535), Hvm, Both),
    // update-only list edits
    p("add_nics", Objects(Sub::Nic), All, Update),
    p("update_nics", Objects(Sub::NicUpdate), All, Update),
    p("remove_nics", StrList, All, Update),
    p("add_disks", Objects(Sub::Disk), Hvm, Update),
    p("update_disks", Objects(Sub::DiskUpdate), Hvm, Update),
    p("remove_disks", StrList, Hvm, Update),
    p("add_filesystems", Objects(Sub::Filesystem), Zone, Update),
    p("remove_filesystems", StrList, Zone, Update),
    p("set_customer_metadata", ScalarMap, All, Update),
    p("remove_customer_metadata", StrList, All, Update),
    p("set_internal_metadata", ScalarMap, All, Update),
    p("remove_internal_metadata", StrList, All, Update),
    p("set_tags", ScalarMap, All, Update),
    p("remove_tags", StrList, All, Update),
    p("set_routes", Map, All, Update),
    p("remove_routes", StrList, All, Update),
];

/// Fields of a nic object, with their shapes.
pub const NIC_FIELDS: &[(&str, Ty)] = &[
    ("allow_dhcp_spoofing", Bool),
    ("allow_ip_spoofing", Bool),
    ("allow_mac_spoofing", Bool),
    ("allow_restricted_traffic", Bool),
    ("allow_unfiltered_promisc", Bool),
    ("allowed_ips", StrList),
    ("blocked_outgoing_ports", IntList),
    ("dhcp_server", Bool),
    ("gateway", Str),
    ("gateways", StrList),
    ("interface", Str),
    ("ip", Str),
    ("ips", StrList),
    ("mac", Str),
    ("model", Str),
    ("mtu", Int(576, 9000)),
    ("netmask", Str),
    ("network_uuid", Uuid),
    ("nic_tag", Str),
    ("primary", Bool),
    ("vlan_id", Int(0, 4094)),
    ("vrrp_primary_ip", Str),
    ("vrrp_vrid", Int(0, 255)),
];

/// Fields of a disk object.
pub const DISK_FIELDS: &[(&str, Ty)] = &[
    ("block_size", Int(512, 131072)),
    ("boot", Bool),
    ("compression", Str),
    ("image_name", Str),
    ("image_size", Int(1, I64 >> 20)),
    ("image_uuid", Uuid),
    ("media", Str),
    ("model", Str),
    ("nocreate", Bool),
    ("notrim", Bool),
    ("path", Str),
    ("pci_slot", Str),
    ("refreservation", Int(0, I64)),
    ("size", Int(1, I64 >> 20)),
    ("uuid", Uuid),
    ("zpool", Zpool),
];

/// Fields of a filesystem object.
pub const FILESYSTEM_FIELDS: &[(&str, Ty)] = &[
    ("options", StrList),
    ("raw", Str),
    ("source", Str),
    ("target", Str),
    ("type", Str),
];

/// Fields of a PCI pass-through device.
pub const PCI_FIELDS: &[(&str, Ty)] = &[("model", Str), ("path", Str), ("pci_slot", Str)];

/// Looks a top-level property up by name.
pub fn find(name: &str) -> Option<&'static Prop> {
    PROPS.iter().find(|p| p.name == name)
}
