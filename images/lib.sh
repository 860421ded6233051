# Shared helpers of the image recipes (sourced, not run).
# Every recipe builds into "$out.tmp" and renames to "$out" only when complete, so an
# interrupted build never looks like a finished image and a rerun starts clean.
set -euo pipefail
images_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$images_dir/.." && pwd)
cache="${SKERRY_CACHE:-$repo_root/.cache}"
mkdir -p "$cache/images"

log() { echo "images/$recipe: $*" >&2; }
die() { echo "images/$recipe: error: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and file owners need it)"
}

# content_key FILE...: a sha256 over the names and contents of FILEs (directories: every
# file in them): the recipe scripts, helpers and binaries an image is made of.
content_key() {
    local f
    for f in "$@"; do
        [ -e "$f" ] || die "content_key: $f does not exist"
        find "$(readlink -f "$f")" -type f -print0
    done | LC_ALL=C sort -z | xargs -0 sha256sum | sed "s|  $repo_root/|  |" | sha256sum | cut -d' ' -f1
}

# cached_or_lock OUT KEY: prints OUT and exits when the image is already built from the
# same inputs, i.e. its manifest carries tags.content_key = KEY (see content_key;
# unless FORCE is set); otherwise takes a lock so that concurrent builds of one image
# (two test suites at once) wait for each other instead of trampling "$OUT.tmp". An
# edited recipe or a changed embedded binary changes KEY, so the image is rebuilt
# instead of served stale. write_manifest records KEY.
cached_or_lock() {
    local out=$1
    image_key=${2:?cached_or_lock needs a content key}
    if is_cached "$out"; then echo "$out"; exit 0; fi
    exec 9>"$out.lock"
    flock 9
    if is_cached "$out"; then echo "$out"; exit 0; fi
    [ ! -f "$out/manifest.json" ] || [ -n "${FORCE:-}" ] || log "inputs changed: rebuilding $out"
}

is_cached() {
    [ -z "${FORCE:-}" ] && [ -f "$1/manifest.json" ] \
        && grep -q "\"content_key\": \"$image_key\"" "$1/manifest.json"
}

# write_manifest DIR FILE NAME VERSION TYPE OS COMPRESSION DESCRIPTION [TAGS_JSON [EXTRA]]
# Writes DIR/manifest.json, an IMGAPI v2 manifest for DIR/FILE. EXTRA is more
# top-level JSON members ("key": value, ...) such as a zvol's image_size.
write_manifest() {
    local dir=$1 file=$2 name=$3 version=$4 type=$5 os=$6 compression=$7 desc=$8 tags=${9:-"{}"} extra=${10:-}
    local uuid sha1 sha256 size now
    # The content key cached_or_lock compares on the next build.
    [ -n "${image_key:-}" ] || die "write_manifest: no content key (cached_or_lock first)"
    if [ "$tags" = "{}" ]; then tags="{\"content_key\": \"$image_key\"}"
    else tags="{\"content_key\": \"$image_key\", ${tags#\{}"; fi
    uuid=$(cat /proc/sys/kernel/random/uuid)
    sha1=$(sha1sum "$dir/$file" | cut -d' ' -f1)
    sha256=$(sha256sum "$dir/$file" | cut -d' ' -f1)
    size=$(stat -c %s "$dir/$file")
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cat > "$dir/manifest.json" <<JSON
{
  "v": 2,
  "uuid": "$uuid",
  "owner": "00000000-0000-0000-0000-000000000000",
  "name": "$name",
  "version": "$version",
  "state": "active",
  "disabled": false,
  "public": true,
  "published_at": "$now",
  "type": "$type",
  "os": "$os",
  "description": "$desc",
  "files": [
    {
      "sha1": "$sha1",
      "sha256": "$sha256",
      "size": $size,
      "compression": "$compression"
    }
  ],
  "requirements": {},${extra:+
  $extra,}
  "tags": $tags
}
JSON
}

# pack_rootfs ROOT OUTFILE COMPRESSOR: a tarball keeping numeric owners, modes,
# xattrs and hard links, paths relative ("./...") so unpacking stays inside.
pack_rootfs() {
    local root=$1 outfile=$2 comp=$3
    tar --numeric-owner --xattrs --xattrs-include='*' --acls --sort=name \
        -C "$root" -cf - . | $comp > "$outfile"
}

# finish DIR: publish "$DIR.tmp" as DIR and print it.
finish() {
    local out=$1
    rm -rf "$out"
    mv "$out.tmp" "$out"
    echo "$out"
}

# debian_base: prints the directory of a cached Debian bookworm minbase root (built once
# with debootstrap, downloads kept in $cache/debootstrap-debs) that both Debian images
# copy: sysvinit instead of systemd (it boots fast, even under nested KVM), iproute2,
# udhcpc and kmod for networking and modules, fdisk to grow the root partition.
# The directory name carries the package set: changing it builds a new base.
debian_base() {
    local base="$cache/debootstrap/bookworm-minbase-2"
    mkdir -p "$cache/debootstrap"
    exec 8>"$base.lock"
    flock 8
    if [ ! -f "$base/.complete" ]; then
        need_root
        command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        mkdir -p "$cache/debootstrap-debs"
        rm -rf "$base.tmp"
        log "debootstrap bookworm (minbase) into $base"
        debootstrap --variant=minbase --cache-dir="$cache/debootstrap-debs" \
            --include=sysvinit-core,kmod,iproute2,udhcpc,netbase,procps,fdisk \
            bookworm "$base.tmp" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2 \
            || die "debootstrap failed (log: $base.tmp/debootstrap/debootstrap.log)"
        chroot "$base.tmp" apt-get clean
        rm -rf "$base.tmp"/var/lib/apt/lists/* "$base.tmp"/var/log/*.log
        touch "$base.tmp/.complete"
        rm -rf "$base" && mv "$base.tmp" "$base"
    fi
    flock -u 8
    echo "$base"
}

# copy_base DEST: a fresh copy of the Debian base root (owners, modes, xattrs, links).
copy_base() {
    local base
    base=$(debian_base)
    rm -rf "$1"
    mkdir -p "$1"
    cp -a "$base/." "$1/"
    rm -f "$1/.complete"
}

# busybox_static: prints the path of Debian's static busybox binary (cached .deb).
busybox_static() {
    local debs="$cache/debs" deb dir="$cache/busybox-static"
    mkdir -p "$debs"
    deb=$(ls "$debs"/busybox-static_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading busybox-static"
        (cd "$debs" && apt-get download busybox-static >&2) || die "apt-get download busybox-static failed (apt-get update?)"
        deb=$(ls "$debs"/busybox-static_*.deb | head -n1)
    fi
    if [ ! -x "$dir/bin/busybox" ]; then
        rm -rf "$dir.tmp" && dpkg-deb -x "$deb" "$dir.tmp" && rm -rf "$dir" && mv "$dir.tmp" "$dir"
    fi
    echo "$dir/bin/busybox"
}

# empty_root_password ROOT: root logs in on the console without a password. These
# are test images; the README says so.
empty_root_password() {
    sed -i 's/^root:[^:]*:/root::/' "$1/etc/shadow"
}

# The first-boot agent and mdata-client's four tools, installed where mdata-client's
# Makefile puts them (BINDIR = /usr/sbin).
mdata_programs=(mdata-get mdata-put mdata-list mdata-delete mdata-firstboot)

# mdata_tools: builds the mdata crate's programs statically against glibc (no musl
# target here; the busybox image has no libc at all) in their own target directory
# under the cache, so the workspace's build stays warm, and prints the directory
# holding them. Dies when a program is dynamically linked.
mdata_tools() {
    local target="$cache/mdata-target" triple=x86_64-unknown-linux-gnu p f
    command -v cargo >/dev/null || die "cargo is needed to build the mdata tools"
    (cd "$repo_root" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target" \
        cargo build -q --release -p mdata --bins --target "$triple") >&2 \
        || die "building the mdata tools failed"
    for p in "${mdata_programs[@]}"; do
        f="$target/$triple/release/$p"
        [ -x "$f" ] || die "$f was not built"
        case "$(file -b "$f")" in
        *static-pie\ linked* | *statically\ linked*) ;;
        *) die "$f is not statically linked: $(file -b "$f")" ;;
        esac
        case "$(ldd "$f" 2>&1)" in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) die "$f needs shared libraries: $(ldd "$f" 2>&1 | tr '\n' ' ')" ;;
        esac
    done
    echo "$target/$triple/release"
}

# mdata_key_inputs TOOLS_DIR: the files an image embedding the mdata tools depends on
# (for content_key): the programs and the boot hook.
mdata_key_inputs() {
    local p
    for p in "${mdata_programs[@]}"; do echo "$1/$p"; done
    echo "$images_dir/mdata/mdata-boot"
}

# install_mdata ROOT TOOLS_DIR: the tools into ROOT/usr/sbin and the boot hook into
# ROOT/etc/init.d/mdata-boot (see images/mdata/mdata-boot).
install_mdata() {
    local root=$1 tools=$2 p
    mkdir -p "$root/usr/sbin" "$root/etc/init.d"
    for p in "${mdata_programs[@]}"; do install -m 0755 "$tools/$p" "$root/usr/sbin/$p"; done
    install -m 0755 "$images_dir/mdata/mdata-boot" "$root/etc/init.d/mdata-boot"
}
