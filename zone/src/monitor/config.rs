//! From init's `config.json` to what the launcher needs.

use crate::cgroups::Limits;
use crate::error::{Result, ZoneError};
use crate::idmap::IdMap;
use crate::launch::LaunchSpec;
use crate::net::NicPlan;
use crate::rootfs::Upper;
use monitor::{self as contract, InstanceConfig};

/// Builds the launch description of a zone from init's config.
pub fn launch_spec(config: &InstanceConfig) -> Result<LaunchSpec> {
    let spec::Kind::Zone(z) = &config.spec.kind else {
        return Err(ZoneError::Invalid(format!(
            "instance {} ({}) is not a zone",
            config.spec.name, config.uuid
        )));
    };
    let dir = spec::pool::instance_dir(&config.pool, &config.uuid);
    let nics = config
        .spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            let bridge = config
                .bridges
                .get(&nic.tag)
                .cloned()
                .unwrap_or_else(|| contract::default_bridge_name(&nic.tag));
            NicPlan::new(&config.uuid, i, nic, bridge, config.spec.firewall.clone())
        })
        .collect();
    let command = if z.init.is_empty() {
        vec![spec::defaults::INIT.to_string()]
    } else {
        z.init.clone()
    };
    Ok(LaunchSpec {
        // The cgroup's name too (init reads usage from it).
        name: contract::zone_cgroup_name(&config.uuid),
        image: config.image_path.clone(),
        upper: Upper::Persistent {
            upper: dir.join("upper"),
            work: dir.join("work"),
        },
        idmap: IdMap::new(config.id_range_start)?,
        hostname: if z.hostname.is_empty() {
            config.spec.name.clone()
        } else {
            z.hostname.clone()
        },
        command,
        env: z.env.clone(),
        workdir: z.workdir.clone(),
        user: z
            .user
            .as_ref()
            .map(|u| {
                crate::user::resolve(&config.image_path, u).map_err(|source| ZoneError::User {
                    instance: format!("{} ({})", config.spec.name, config.uuid),
                    user: u.clone(),
                    source,
                })
            })
            .transpose()?,
        limits: Limits {
            memory: Some(config.spec.memory),
            cpu_cap: z.cpu_cap,
            pids: Some(z.pids),
        },
        nics,
        resolvers: config.spec.resolvers.clone(),
        die_with_runtime: true,
        metadata: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(init: Vec<String>, hostname: &str) -> InstanceConfig {
        let nic = |name: &str, tag: &str| spec::Nic::new(name, tag, spec::IpConfig::Dhcp);
        InstanceConfig {
            uuid: "0123abcd-0000-4000-8000-000000000001".into(),
            pool: "/zones".into(),
            run_dir: "/run/skerry".into(),
            spec: spec::InstanceSpec {
                name: "web01".into(),
                uuid: None,
                ensure: spec::Ensure::Present,
                autoboot: true,
                image: spec::ImageRef::Name {
                    name: "busybox".into(),
                    version: None,
                },
                memory: 256 << 20,
                nics: vec![nic("net0", "admin"), nic("net1", "storage")],
                resolvers: vec![],
                metadata: BTreeMap::new(),
                user_script: None,
                user_data: None,
                ssh_keys: Vec::new(),
                firewall: None,
                kind: spec::Kind::Zone(spec::ZoneSpec {
                    cpu_cap: 50,
                    pids: 2000,
                    quota: None,
                    hostname: hostname.into(),
                    init,
                    env: vec![],
                    workdir: None,
                    user: None,
                }),
                origin: spec::Origin::default(),
            },
            image_path: "/zones/images/x/rootfs".into(),
            id_range_start: 200_000,
            bridges: [("admin".to_string(), "br-admin".to_string())].into(),
            image_defaults: None,
        }
    }

    #[test]
    fn launch_spec_follows_the_config() {
        let ls = launch_spec(&config(vec![], "")).unwrap();
        assert_eq!(ls.command, vec!["/sbin/init".to_string()]);
        assert_eq!(ls.hostname, "web01");
        assert_eq!(ls.idmap.start, 200_000);
        assert_eq!(
            ls.limits,
            Limits {
                memory: Some(256 << 20),
                cpu_cap: 50,
                pids: Some(2000)
            }
        );
        assert_eq!(ls.nics[0].bridge, "br-admin");
        assert_eq!(ls.nics[1].bridge, "sk-storage");
        assert_eq!(ls.nics[1].host_if, "sk0123abcdn1");
        assert_eq!(
            ls.upper,
            Upper::Persistent {
                upper: "/zones/0123abcd-0000-4000-8000-000000000001/upper".into(),
                work: "/zones/0123abcd-0000-4000-8000-000000000001/work".into()
            }
        );
        let ls = launch_spec(&config(vec!["/bin/sh".into()], "h1")).unwrap();
        assert_eq!(
            (ls.command[0].as_str(), ls.hostname.as_str()),
            ("/bin/sh", "h1")
        );
    }

    #[test]
    fn an_hvm_config_is_refused() {
        let mut c = config(vec![], "");
        c.spec.kind = spec::Kind::Hvm(spec::HvmSpec {
            vcpus: 1,
            cpu_cap: 0,
            disks: vec![],
            cmdline: None,
        });
        let err = launch_spec(&c).unwrap_err().to_string();
        assert!(err.contains("web01") && err.contains("not a zone"), "{err}");
    }
}
