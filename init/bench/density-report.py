#!/usr/bin/python3
"""The density benchmark's report: every figure beside its peer and its target, and
the cost against N plotted with matplotlib.

    density-report.py RESULTS.jsonl OUT.svg

RESULTS.jsonl holds one {"n", "what", "value"} object per line, as init/bench/density
writes them.
"""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, svg = sys.argv[1], sys.argv[2]
by_n = defaultdict(dict)
with open(results) as f:
    for line in f:
        r = json.loads(line)
        by_n[r["n"]][r["what"]] = float(r["value"])
ns = sorted(by_n)


def get(n, what):
    return by_n[n].get(what, float("nan"))


rows = [
    ("to all running (ms)", "skerry_start_ms", "runc_start_ms", "runc run -d loop"),
    ("monitor PSS per zone (KiB)", "monitor_pss_kib", "conmon_pss_kib", "conmon"),
    ("node memory per zone (KiB)", "skerry_node_kib_per_zone", "runc_node_kib_per_zone", "runc"),
    ("init RSS (KiB)", "init_rss_kib", None, None),
    ("init idle CPU (% of a core)", "init_idle_cpu_pct", None, None),
    ("no-op reconcile (ms)", "noop_reconcile_ms", None, None),
    ("vmadm list (ms)", "vmadm_list_ms", None, None),
    ("re-adoption after kill -9 (ms)", "readopt_ms", None, None),
]
print()
print(f"{'N':>5}  {'figure':<32} {'skerry':>10}  {'peer':>10}  ratio  (peer)")
for n in ns:
    for label, ours, peer, peer_name in rows:
        v = get(n, ours)
        if peer:
            p = get(n, peer)
            ratio = v / p if p else float("nan")
            print(f"{n:>5}  {label:<32} {v:>10.1f}  {p:>10.1f}  {ratio:5.2f}  ({peer_name})")
        else:
            print(f"{n:>5}  {label:<32} {v:>10.1f}")

# Issue 17's targets, each at the largest N measured that it names (or below).
print()
print("targets:")


def target(name, ok, detail):
    print(f"  [{'met' if ok else 'MISSED'}] {name}: {detail}")


def at_most(n_wanted):
    fit = [n for n in ns if n <= n_wanted]
    return max(fit) if fit else None


n200 = at_most(200)
if n200:
    r = get(n200, "skerry_start_ms") / get(n200, "runc_start_ms")
    target(f"{n200} zones to all running <= 0.5x the runc loop", r <= 0.5, f"{r:.2f}x")
big = max(ns)
worst_pss = max(get(n, "monitor_pss_kib") for n in ns)
target("per-zone monitor PSS <= 1 MiB", worst_pss <= 1024, f"{worst_pss:.0f} KiB at worst")
n500 = at_most(500)
v = get(n500, "noop_reconcile_ms")
target(f"no-op reconcile with {n500} zones < 50 ms", v < 50, f"{v:.1f} ms")
v = max(get(n, "vmadm_list_ms") for n in ns)
target("vmadm list < 30 ms", v < 30, f"{v:.1f} ms at worst")
v = get(n500, "init_idle_cpu_pct")
target(f"init idle CPU with {n500} zones < 1% of a core", v < 1, f"{v:.2f}%")

fig, axes = plt.subplots(2, 2, figsize=(11, 8))
(a, b), (c, d) = axes


def line(ax, what, label, scale=1.0, style="o-"):
    ax.plot(ns, [get(n, what) * scale for n in ns], style, label=label)


line(a, "skerry_start_ms", "skerry (init, concurrent apply)", 1 / 1000)
line(a, "runc_start_ms", "runc run -d, shell loop", 1 / 1000, "s--")
a.set_title("time to all running")
a.set_ylabel("seconds")
line(b, "monitor_pss_kib", "zone monitor PSS", 1 / 1024)
line(b, "conmon_pss_kib", "conmon PSS", 1 / 1024, "s--")
line(b, "skerry_node_kib_per_zone", "node memory growth / zone (skerry)", 1 / 1024, "^-")
line(b, "runc_node_kib_per_zone", "node memory growth / zone (runc)", 1 / 1024, "v--")
b.set_title("memory per zone")
b.set_ylabel("MiB")
line(c, "noop_reconcile_ms", "no-op reconcile")
line(c, "vmadm_list_ms", "vmadm list")
c.axhline(50, color="grey", linestyle=":", label="50 ms")
c.set_title("control plane")
c.set_ylabel("ms")
line(d, "init_rss_kib", "init RSS (MiB)", 1 / 1024)
line(d, "readopt_ms", "re-adoption after kill -9 (s)", 1 / 1000, "s-")
line(d, "init_idle_cpu_pct", "init idle CPU (% of a core)", 1.0, "^-")
d.set_title("init")
for ax in (a, b, c, d):
    ax.set_xlabel("zones (N)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)
fig.suptitle("skerry density: N busybox zones in host mode")
fig.tight_layout()
fig.savefig(svg)
print(f"\nplot: {svg}")
