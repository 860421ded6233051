# Sourced by nested/build (NESTED_EXTRA): adds QEMU, its firmware, benchrun and the
# benchmark's /init to the host root $h.
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gcc -O2 -o "$work/benchrun" "$bench/benchrun.c"
copy_with_libs "$h" "$work/benchrun" benchrun
# A second vmm to compare with in the same host (nested-boot's VMM_BASE).
if [ -n "${VMM_BASE:-}" ]; then copy_with_libs "$h" "$VMM_BASE" vmm-base; fi
copy_with_libs "$h" "$(command -v qemu-system-x86_64)" qemu-system-x86_64
mkdir -p "$h/usr/share/qemu"
cp -L /usr/share/qemu/{qboot.rom,bios-microvm.bin,linuxboot_dma.bin,kvmvapic.bin,pvh.bin} "$h/usr/share/qemu/"
cp -L /usr/share/seabios/bios-256k.bin "$h/usr/share/qemu/"
install -m 755 "$bench/host-init" "$h/init"
