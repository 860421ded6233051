# Sourced by nested/build (NESTED_EXTRA): adds QEMU, its firmware, benchrun and the
# benchmark's /init to the host root $h.
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gcc -O2 -o "$work/benchrun" "$bench/benchrun.c"
copy_with_libs "$h" "$work/benchrun" benchrun
# A second vmm to compare with in the same host (nested-boot's VMM_BASE).
if [ -n "${VMM_BASE:-}" ]; then copy_with_libs "$h" "$VMM_BASE" vmm-base; fi
copy_with_libs "$h" "$(command -v qemu-system-x86_64)" qemu-system-x86_64
mkdir -p "$h/usr/share/qemu"
# QEMU's firmware: Debian's QEMU 7.2 links SeaBIOS's files into /usr/share/qemu,
# 10.0 (from backports, tests/deps/backports.txt) finds them in /usr/share/seabios.
for f in qboot.rom bios-microvm.bin linuxboot_dma.bin kvmvapic.bin pvh.bin bios-256k.bin; do
    src=
    for dir in /usr/share/qemu /usr/share/seabios; do
        [ -n "$src" ] || [ ! -e "$dir/$f" ] || src=$dir/$f
    done
    [ -n "$src" ] || { echo "nested/extra: QEMU firmware $f not found" >&2; exit 1; }
    cp -L "$src" "$h/usr/share/qemu/"
done
install -m 755 "$bench/host-init" "$h/init"
