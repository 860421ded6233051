# Sourced by vmm/nested/build (NESTED_EXTRA) for zone/bench/isolation-node: adds the
# isolation benchmark, the tools it runs (iperf3, sockperf, ping, nft, with their
# libraries), the node kernel's networking modules (with modules.dep, for busybox
# modprobe) and the benchmark's /init to the host root $h.
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
copy_with_libs "$h" "$ISOLATION_BENCH" isolation_bench
# iputils' ping replaces busybox's (the benchmark parses iputils' lines).
for tool in iperf3 sockperf ping nft; do copy_with_libs "$h" "$(command -v $tool)" $tool; done
# host::isolation runs nft from where the node image puts it.
mkdir -p "$h/usr/sbin" && mv "$h/bin/nft" "$h/usr/sbin/nft"
kmods="$h/lib/modules/$kver"
mkdir -p "$kmods/kernel/drivers/net"
cp -r "$mods/net" "$mods/lib" "$kmods/kernel/"
cp "$mods/drivers/net/veth.ko" "$kmods/kernel/drivers/net/"
cp "$kdir/lib/modules/$kver/modules.dep" "$kmods/"
install -m 755 "$bench/host-init" "$h/init"
# A rule to price in place of the calibration's (zone/examples/isolation_bench.rs).
if [ -n "${ISOLATION_BENCH_CALIBRATION_RULE:-}" ]; then
    printf '%s\n' "$ISOLATION_BENCH_CALIBRATION_RULE" >"$h/calibration-rule"
fi
