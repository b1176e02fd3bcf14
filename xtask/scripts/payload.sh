#!/usr/bin/env bash
# Builds the test boot payload into CACHE (default target/xboot-cache), idempotently:
#   vmlinuz          Debian's kernel (linux-image-amd64's dependency), extracted, never installed
#   kernel-version   its release string (e.g. 6.1.0-56-amd64)
#   modules/*.ko     the NIC drivers the payload loads: e1000, and virtio-net with its
#                    dependencies (for the native UEFI PXE variant), decompressed
#   initrd.gz        busybox-static initrd (cpio newc, gzip) whose /init is xtask/payload/init
# The initrd is rebuilt whenever one of its inputs changes (sha256 stamp).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${1:-${XBOOT_CACHE:-$ROOT/target/xboot-cache}}
MODS=(e1000 virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
      failover net_failover virtio_net)
mkdir -p "$CACHE"

have_kernel() {
  [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/kernel-version" ] || return 1
  local m
  for m in "${MODS[@]}"; do [ -s "$CACHE/modules/$m.ko" ] || return 1; done
}

# apt-get download, refreshing stale package lists once if the download fails.
download() {
  apt-get download "$1" >/dev/null 2>&1 && return 0
  apt-get update -q >/dev/null
  apt-get download "$1" >/dev/null
}

if ! have_kernel; then
  echo "payload: fetching Debian's kernel package (vmlinuz + NIC modules)"
  PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$PKG" ]; then
    apt-get update -q >/dev/null
    PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  (cd "$T" && download "$PKG")
  PATTERNS=('./boot/vmlinuz-*')
  for m in "${MODS[@]}"; do PATTERNS+=("*/$m.ko*"); done
  dpkg --fsys-tarfile "$T"/*.deb | tar -x -C "$T" --wildcards "${PATTERNS[@]}"
  ls "$T"/boot/vmlinuz-* >/dev/null
  KVER=$(basename "$T"/boot/vmlinuz-*); KVER=${KVER#vmlinuz-}
  mkdir -p "$CACHE/modules"
  for m in "${MODS[@]}"; do
    f=$(find "$T/lib/modules/$KVER" -name "$m.ko*" | head -1)
    [ -n "$f" ] || { echo "payload: module $m not found in $PKG" >&2; exit 1; }
    case $f in
      *.xz) xz -dc "$f" ;;
      *.zst) zstd -dcq "$f" ;;
      *.gz) gzip -dc "$f" ;;
      *) cat "$f" ;;
    esac > "$CACHE/modules/$m.ko.tmp"
    mv "$CACHE/modules/$m.ko.tmp" "$CACHE/modules/$m.ko"
  done
  cp "$T"/boot/vmlinuz-* "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
  echo "$KVER" > "$CACHE/kernel-version"
fi

INPUTS=("$ROOT/xtask/payload/init" "$ROOT/xtask/payload/udhcpc.script" /bin/busybox "$0")
for m in "${MODS[@]}"; do INPUTS+=("$CACHE/modules/$m.ko"); done
STAMP=$(sha256sum "${INPUTS[@]}" | sed "s| $ROOT/| |" | sha256sum | cut -d' ' -f1)
if [ ! -s "$CACHE/initrd.gz" ] || [ "$(cat "$CACHE/initrd.stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "payload: building the busybox initrd"
  R=$(mktemp -d)
  mkdir -p "$R"/{bin,dev,etc,proc,sys,tmp,lib/modules}
  cp /bin/busybox "$R/bin/busybox"
  ln -s busybox "$R/bin/sh"
  install -m 755 "$ROOT/xtask/payload/init" "$R/init"
  install -m 755 "$ROOT/xtask/payload/udhcpc.script" "$R/etc/udhcpc.script"
  for m in "${MODS[@]}"; do cp "$CACHE/modules/$m.ko" "$R/lib/modules/"; done
  mknod -m 600 "$R/dev/console" c 5 1
  mknod -m 666 "$R/dev/null" c 1 3
  (cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6) > "$CACHE/initrd.gz.tmp"
  mv "$CACHE/initrd.gz.tmp" "$CACHE/initrd.gz"
  rm -rf "$R"
  echo "$STAMP" > "$CACHE/initrd.stamp"
fi
