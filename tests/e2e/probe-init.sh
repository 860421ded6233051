#!/bin/sh
# A stand-in PID 1 for testing the image pipeline alone (tests only, never shipped as
# the node's init): it checks what the image carries and what the boot gave it,
# prints `probe: ...` lines the test asserts on, and powers the node off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
echo "probe: cmdline $(cat /proc/cmdline)"
for m in virtio_pci virtio_blk virtio_net overlay bridge veth tun; do
    if modprobe "$m"; then echo "probe: module $m ok"; else echo "probe: module $m FAILED"; fi
done
if grep -qw svm /proc/cpuinfo; then kvm=kvm_amd; else kvm=kvm_intel; fi
if modprobe "$kvm" && [ -c /dev/kvm ]; then echo "probe: kvm ok ($kvm)"; else echo "probe: kvm FAILED ($kvm)"; fi
for b in init vmadm imgadm zone vmm; do
    # 126/127: not executable, or its loader/libraries are missing from the image.
    /bin/$b --help >/dev/null 2>&1
    rc=$?
    if [ "$rc" -lt 126 ]; then echo "probe: bin $b runs"; else echo "probe: bin $b FAILED ($rc)"; fi
done
i=0
while [ -z "$(findfs LABEL=zones 2>/dev/null)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
dev=$(findfs LABEL=zones)
echo "probe: pool $dev"
mkdir -p /zones
if mount -t ext4 "$dev" /zones; then
    echo "probe: manifests $(cd /zones/manifests && echo *)"
    echo boot >> /zones/probe-boots
    echo "probe: boots $(wc -l < /zones/probe-boots)"
    umount /zones
fi
# The image source on the host, through QEMU's user-mode network.
src=$(sed -n 's/.*skerry\.sources=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$src" ]; then
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    if wget -q -O /tmp/images "$src/images"; then
        echo "probe: source lists $(grep -o '"uuid"' /tmp/images | wc -l) images"
    else
        echo "probe: source $src FAILED"
    fi
fi
mkdir -p /run/dbus
if dbus-daemon --system --fork \
    && dbus-send --system --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.ListNames >/dev/null; then
    echo "probe: system bus ok"
else
    echo "probe: system bus FAILED"
fi
echo "probe: done"
sync
poweroff -f
