#!/usr/bin/env bash
# One-time, idempotent machine set-up for building and testing xboot on Debian 12 (root).
# Called by `cargo xtask setup` (and therefore by `cargo xtask demo` and `cargo xtask test`).
#  1. Debian packages: the real peers the tests talk to (DHCP clients, PXE firmware, qemu,
#     TFTP clients, IPMI simulator and clients, perfdhcp, dnsmasq) and tools the tests use.
#  2. The nightly toolchain's rust-src component (the eBPF crate is built with -Z build-std).
#  3. bpf-linker built against the nightly's own LLVM (no Debian LLVM matches it).
#  4. A test kernel (Debian's, extracted, not installed) and a busybox initrd, cached under target/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XBOOT_CACHE:-$ROOT/target/xboot-cache}
mkdir -p "$CACHE"
export DEBIAN_FRONTEND=noninteractive

PKGS=(qemu-system-x86 qemu-utils ipxe-qemu ipxe seabios ovmf
      dnsmasq-base isc-dhcp-client busybox-static tftp-hpa atftp curl
      openipmi ipmitool freeipmi-tools kea-admin
      tcpdump iproute2 iputils-ping ethtool cpio xz-utils zstd procps psmisc python3
      ndisc6)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  [ -f /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -q >/dev/null || apt-get update
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  echo "setup: adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

if ! "$HOME/.cargo/bin/bpf-linker" --version >/dev/null 2>&1 && ! rustup run nightly bpf-linker --version >/dev/null 2>&1; then
  LLVM_MAJOR=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  D=$HOME/.cache/xboot-llvm-$LLVM_MAJOR
  SYSROOT=$(rustc +nightly --print sysroot)
  mkdir -p "$D/lib"
  ln -sf "$SYSROOT"/lib/libLLVM.so.* "$D/lib/libLLVM.so"
  for f in "$SYSROOT"/lib/libLLVM.so.*; do ln -sf "$f" "$D/lib/"; done
  echo "setup: building bpf-linker against the nightly's LLVM $LLVM_MAJOR (a few minutes, once)"
  LLVM_PREFIX=$D cargo install bpf-linker --locked --no-default-features --features "llvm-$LLVM_MAJOR"
fi

# Test kernel: Debian's linux-image package, extracted (never installed).
if [ ! -s "$CACHE/vmlinuz" ]; then
  echo "setup: fetching a Debian kernel for the PXE tests"
  PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  T=$(mktemp -d)
  (cd "$T" && apt-get download "$PKG" >/dev/null 2>&1 && dpkg -x ./*.deb root)
  cp "$T"/root/boot/vmlinuz-* "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
  rm -rf "$T"
fi
echo "setup: ok"
