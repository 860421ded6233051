//! Resource limits: a zone runs in the cgroup `skerry/<zone name>`. The cgroup code
//! (v1/v2 detection, limits, delegation, removal) is [`host::cgroup`], shared with the
//! vmm's jail; this module names it for the zone runtime.

pub use host::cgroup::{
    Cgroup as ZoneCgroup, CgroupError, Hierarchy, Limits, StaleCgroup, V1Cgroup, V2Cgroup,
    CONTROLLERS, CPU_PERIOD_US, STANDARD_DEVICES,
};
