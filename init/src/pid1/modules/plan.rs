//! Which modules load, and which loads wait for which: pure, so every rule is
//! unit-tested without a kernel.

use std::collections::{HashMap, HashSet};

use super::{module_name, ModuleIndex};
use crate::pid1::error::BootError;

/// One module of a [`LoadPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLoad {
    /// Module name (underscores).
    pub name: String,
    /// File, relative to the index's base.
    pub rel: String,
    /// Indices (into [`LoadPlan::loads`], all smaller than this one's) of the modules
    /// that must be loaded first: its dependencies from modules.dep.
    pub after: Vec<usize>,
}

/// The modules to load, each listed after everything it waits for, so loading them
/// one after the other in order is also correct.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Each module once.
    pub loads: Vec<PlannedLoad>,
}

impl LoadPlan {
    /// Splits the plan in two: the modules `first` names with everything they depend
    /// on (what the boot waits for), and the rest, to load after those (while the
    /// boot goes on). The second plan's waits on modules of the first are dropped:
    /// the first is loaded before the second starts.
    pub fn split(&self, first: impl Fn(&str) -> bool) -> (LoadPlan, LoadPlan) {
        let mut in_first = vec![false; self.loads.len()];
        // Dependents come after their dependencies, so one backward pass closes the set.
        for i in (0..self.loads.len()).rev() {
            if first(&self.loads[i].name) || in_first[i] {
                in_first[i] = true;
                for &a in &self.loads[i].after {
                    in_first[a] = true;
                }
            }
        }
        let mut new_index = vec![usize::MAX; self.loads.len()];
        let (mut a, mut b) = (LoadPlan::default(), LoadPlan::default());
        for (i, l) in self.loads.iter().enumerate() {
            let (part, first_part) = if in_first[i] {
                (&mut a, true)
            } else {
                (&mut b, false)
            };
            let after = l
                .after
                .iter()
                .filter(|&&d| in_first[d] == first_part)
                .map(|&d| new_index[d])
                .collect();
            new_index[i] = part.loads.len();
            part.loads.push(PlannedLoad {
                name: l.name.clone(),
                rel: l.rel.clone(),
                after,
            });
        }
        (a, b)
    }
}

/// Why a wanted module is left out on this CPU: a vendor's KVM module without that
/// vendor's virtualization flag would only be read, relocated and refused with ENODEV
/// (hundreds of milliseconds under emulation, for nothing).
pub fn not_for_this_cpu(name: &str, cpu_flags: &[&str]) -> Option<&'static str> {
    let needs = match module_name(name).as_str() {
        "kvm_intel" => "vmx",
        "kvm_amd" => "svm",
        _ => return None,
    };
    (!cpu_flags.contains(&needs)).then_some(if needs == "vmx" {
        "the CPU has no vmx flag"
    } else {
        "the CPU has no svm flag"
    })
}

/// The flags of the first CPU in `/proc/cpuinfo` text.
pub fn cpu_flags(cpuinfo: &str) -> Vec<&str> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then(|| value.split_whitespace().collect())
        })
        .unwrap_or_default()
}

impl ModuleIndex {
    /// The plan for `names` and their dependencies, in the order asked (a module's
    /// dependencies first); one error per name that cannot be planned (unknown, or
    /// a dependency cycle in modules.dep), the others planned regardless.
    pub fn plan(&self, names: &[String]) -> (LoadPlan, Vec<BootError>) {
        let mut plan = LoadPlan::default();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        let mut errs = Vec::new();
        for n in names {
            if let Err(e) = self.plan_one(&module_name(n), &mut plan, &mut index_of) {
                errs.push(e);
            }
        }
        (plan, errs)
    }

    /// Adds `name` after its dependencies, depth first without recursion (modules.dep
    /// is input: a cycle or a deep chain must not overflow PID 1's stack).
    fn plan_one(
        &self,
        name: &str,
        plan: &mut LoadPlan,
        index_of: &mut HashMap<String, usize>,
    ) -> Result<(), BootError> {
        // (module, whether its dependencies are already pushed)
        let mut stack: Vec<(String, bool)> = vec![(name.to_string(), false)];
        // The modules expanded and not yet planned: the current path from `name` down.
        let mut on_path: HashSet<String> = HashSet::new();
        while let Some((m, expanded)) = stack.pop() {
            if index_of.contains_key(&m) {
                continue;
            }
            let (rel, deps) = self
                .by_name
                .get(&m)
                .ok_or_else(|| BootError::UnknownModule(m.clone()))?;
            let deps: Vec<String> = deps.iter().map(|d| module_name(d)).collect();
            if expanded {
                on_path.remove(&m);
                let after = deps
                    .iter()
                    .filter_map(|d| index_of.get(d).copied())
                    .collect();
                index_of.insert(m.clone(), plan.loads.len());
                plan.loads.push(PlannedLoad {
                    name: m,
                    rel: rel.clone(),
                    after,
                });
                continue;
            }
            if on_path.contains(&m) {
                return Err(BootError::ModuleCycle(m));
            }
            on_path.insert(m.clone());
            stack.push((m, true));
            // modules.dep lists a module's dependencies so that the last must load
            // first: pushed in list order, the last is popped (planned) first.
            for d in deps {
                if on_path.contains(&d) {
                    return Err(BootError::ModuleCycle(d));
                }
                if !index_of.contains_key(&d) {
                    stack.push((d, false));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/veth.ko:
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
kernel/arch/x86/kvm/kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
";

    fn names(plan: &LoadPlan) -> Vec<&str> {
        plan.loads.iter().map(|l| l.name.as_str()).collect()
    }

    fn waits(plan: &LoadPlan, name: &str) -> Vec<String> {
        let l = plan.loads.iter().find(|l| l.name == name).unwrap();
        let mut w: Vec<String> = l
            .after
            .iter()
            .map(|&i| plan.loads[i].name.clone())
            .collect();
        w.sort();
        w
    }

    fn want(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_module_once_after_its_dependencies() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP);
        let (plan, errs) = idx.plan(&want(&["virtio-net", "virtio_blk", "veth", "virtio_net"]));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            names(&plan),
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk",
                "veth"
            ]
        );
        for (i, l) in plan.loads.iter().enumerate() {
            assert!(
                l.after.iter().all(|&a| a < i),
                "{} waits for a later load",
                l.name
            );
        }
        assert_eq!(
            waits(&plan, "virtio_net"),
            ["failover", "net_failover", "virtio", "virtio_ring"]
        );
        assert_eq!(waits(&plan, "virtio_blk"), ["virtio", "virtio_ring"]);
        // Nothing to wait for: veth and the bottom of each chain start at once.
        assert!(waits(&plan, "veth").is_empty());
        assert!(waits(&plan, "virtio_ring").is_empty());
        assert_eq!(plan.loads[4].rel, "kernel/drivers/net/virtio_net.ko");
    }

    #[test]
    fn unknown_modules_and_cycles_are_errors_the_rest_is_planned() {
        let idx = ModuleIndex::parse(
            Path::new("/m"),
            &format!("{DEP}kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"),
        );
        let (plan, errs) = idx.plan(&want(&["nope", "a", "veth"]));
        assert_eq!(names(&plan), ["veth"]);
        let errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("nope"), "{errs:?}");
        assert!(
            errs[1].contains("cycle") && errs[1].contains('a'),
            "{errs:?}"
        );
    }

    #[test]
    fn a_long_chain_is_planned_without_recursion() {
        let mut dep = String::new();
        for i in 0..100_000 {
            dep.push_str(&format!("m{i}.ko: m{}.ko\n", i + 1));
        }
        dep.push_str("m100000.ko:\n");
        let idx = ModuleIndex::parse(Path::new("/m"), &dep);
        let (plan, errs) = idx.plan(&want(&["m0"]));
        assert!(errs.is_empty());
        assert_eq!(plan.loads.len(), 100_001);
        assert_eq!(plan.loads[0].name, "m100000");
    }

    #[test]
    fn split_keeps_what_the_first_part_needs_and_the_order_of_the_rest() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP);
        let (plan, _) = idx.plan(&want(&["kvm", "virtio_blk", "veth", "virtio_net"]));
        let (first, rest) = plan.split(|n| n == "virtio_blk");
        assert_eq!(names(&first), ["virtio_ring", "virtio", "virtio_blk"]);
        assert_eq!(waits(&first, "virtio_blk"), ["virtio", "virtio_ring"]);
        assert_eq!(
            names(&rest),
            [
                "irqbypass",
                "kvm",
                "veth",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        // virtio and virtio_ring are loaded by then: virtio_net waits only for its own.
        assert_eq!(waits(&rest, "virtio_net"), ["failover", "net_failover"]);
        assert_eq!(waits(&rest, "kvm"), ["irqbypass"]);
        for p in [&first, &rest] {
            for (i, l) in p.loads.iter().enumerate() {
                assert!(
                    l.after.iter().all(|&a| a < i),
                    "{} waits for a later load",
                    l.name
                );
            }
        }
        // A modules.dep that lists only direct dependencies: the first part still
        // holds everything below the module it names.
        let idx = ModuleIndex::parse(
            Path::new("/m"),
            "a.ko: b.ko\nb.ko: c.ko\nc.ko:\nd.ko: c.ko\n",
        );
        let (chain, _) = idx.plan(&want(&["d", "a"]));
        let (first, rest) = chain.split(|n| n == "a");
        assert_eq!(names(&first), ["c", "b", "a"]);
        assert_eq!(names(&rest), ["d"]);
        assert!(rest.loads[0].after.is_empty());
        let (all, none) = plan.split(|_| true);
        assert_eq!(all, plan);
        assert!(none.loads.is_empty());
    }

    #[test]
    fn only_the_kvm_module_of_the_cpu_vendor() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme svm lm\n\nprocessor\t: 1\n";
        let flags = cpu_flags(info);
        assert_eq!(flags, ["fpu", "vme", "svm", "lm"]);
        assert_eq!(not_for_this_cpu("kvm_amd", &flags), None);
        assert_eq!(not_for_this_cpu("kvm", &flags), None);
        assert_eq!(not_for_this_cpu("virtio_net", &flags), None);
        assert!(not_for_this_cpu("kvm-intel", &flags)
            .unwrap()
            .contains("vmx"));
        let intel = cpu_flags("flags : fpu vmx");
        assert!(not_for_this_cpu("kvm_amd", &intel).unwrap().contains("svm"));
        assert_eq!(not_for_this_cpu("kvm_intel", &intel), None);
        // No flags line (or no virtualization): neither vendor module.
        assert!(not_for_this_cpu("kvm_intel", &cpu_flags("")).is_some());
    }
}
