# Helpers shared by the HVM disk recipes (debian-hvm, debian-cloudinit-hvm); sourced
# after lib.sh. The VMM boots the kernel and initrd it finds in the image's /boot
# (ext4, partition 1), so every HVM image has them there.

# hvm_kernel ROOT KDIR: Debian's cloud kernel (KDIR from build-image/fetch-kernel)
# into ROOT/boot with its modules, and the small initrd of debian-hvm/mkinitrd;
# vmlinuz and initrd.img links name the current ones.
hvm_kernel() {
    local root=$1 kdir=$2 kver
    kver=$(cat "$kdir/version")
    log "kernel $kver"
    mkdir -p "$root/boot" "$root/lib/modules"
    cp "$kdir/vmlinuz" "$root/boot/vmlinuz-$kver"
    cp "$kdir/config" "$root/boot/config-$kver"
    cp -a "$kdir/lib/modules/$kver" "$root/lib/modules/$kver"
    depmod -b "$root" "$kver"
    "$images_dir/debian-hvm/mkinitrd" "$kdir" "$root/boot/initrd.img-$kver"
    ln -sf "vmlinuz-$kver" "$root/boot/vmlinuz"
    ln -sf "initrd.img-$kver" "$root/boot/initrd.img"
}

# hvm_system ROOT: a serial-console sysvinit system: getty on ttyS0 instead of the
# virtual terminals, skerry-growroot after rcS, fstab for LABEL=skerry-root, hostname
# "debian", root without a password (test image), no device nodes.
hvm_system() {
    local root=$1
    # Serial console only: no virtual terminals in a VMM without a display.
    sed -i -e 's/^\([1-6]:[0-9]*:respawn:\)/#\1/' "$root/etc/inittab"
    sed -i -e 's|^si::sysinit:/etc/init.d/rcS$|&\ngr::sysinit:/etc/init.d/skerry-growroot|' "$root/etc/inittab"
    grep -q '^gr::sysinit' "$root/etc/inittab" || die "inittab has no rcS line to hook skerry-growroot after"
    echo 'T0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100' >> "$root/etc/inittab"
    # Root is checked by nobody (pass 0): fsck under nested virtualization is slow and
    # the image is cloned fresh per instance.
    printf 'LABEL=skerry-root / ext4 defaults,errors=remount-ro 0 0\n' > "$root/etc/fstab"
    echo debian > "$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
    empty_root_password "$root"
    ln -sf ../proc/mounts "$root/etc/mtab"
    install -m 0755 "$images_dir/debian-hvm/skerry-growroot" "$root/etc/init.d/skerry-growroot"
    rm -rf "$root"/dev/*
}

# hvm_disk ROOT OUT DISK_MIB: OUT (zstd) is a DISK_MIB raw GPT disk whose partition 1
# (1 MiB .. end-1 MiB) is an ext4 labelled skerry-root holding ROOT, made with
# `mkfs.ext4 -d` into a file and copied to the partition offset (no loop mounts).
hvm_disk() {
    local root=$1 out=$2 disk_mib=$3 part_mib work
    work=$(dirname "$out")
    log "building the ${disk_mib} MiB disk"
    part_mib=$((disk_mib - 2))
    mkfs.ext4 -q -F -L skerry-root -d "$root" -E root_owner=0:0 "$work/part.img" "${part_mib}M" >&2
    truncate -s "${disk_mib}M" "$work/disk.raw"
    printf 'label: gpt\nstart=2048, size=%d, type=L, name=root\n' $((part_mib * 2048)) \
        | sfdisk -q "$work/disk.raw"
    dd if="$work/part.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
    rm -f "$work/part.img"
    zstd -q -T2 -10 --rm "$work/disk.raw" -o "$out"
}
