#!/usr/bin/env bash
# One-time, idempotent machine set-up for building and testing xboot on Debian 12 (root).
# Called by `cargo xtask setup` (and therefore by `cargo xtask demo` and `cargo xtask test`).
#  1. Every peer of xtask/peers.txt, the one list of the programs and files the tests, the
#     demo and the benchmarks use: Debian packages (DHCP clients, PXE firmware, qemu, TFTP
#     clients, IPMI simulator and clients, perfdhcp, dnsmasq, tools) and PyPI packages
#     (the Redfish emulator sushy-tools and its bcrypt).
#  2. The nightly toolchain's rust-src component (the eBPF crate is built with -Z build-std).
#  3. bpf-linker built against the nightly's own LLVM (no Debian LLVM matches it).
#  4. Other cargo tools of the list (cargo-deb), and packages of other Debian suites (`deb`
#     peers: Debian 13's ipxe for the package's and the image's iPXE bundle), downloaded
#     and unpacked into the cache, never installed.
#  5. A test kernel (Debian's, extracted, not installed) and a busybox initrd, cached under target/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XBOOT_CACHE:-$ROOT/target/xboot-cache}
mkdir -p "$CACHE"
export DEBIAN_FRONTEND=noninteractive

PEERS=$ROOT/xtask/peers.txt
# The packages of one source in xtask/peers.txt (its third column), each once.
peer_packages() {
  awk -v from="$1" '!/^[[:space:]]*(#|$)/ && $2 == from { print $3 }' "$PEERS" | sort -u
}
mapfile -t PKGS < <(peer_packages apt)
# One dpkg-query for all packages (a query per package costs ~20 ms each).
missing_pkgs() {
  local -A ok=()
  local name status p
  while read -r name status; do
    [ "$status" = "install ok installed" ] && ok[$name]=1
  done < <(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null || true)
  for p in "${PKGS[@]}"; do
    [ -n "${ok[$p]:-}" ] || echo "$p"
  done
}
# Two rounds: installing qemu-system-x86 7.2 makes apt REMOVE a newer qemu-utils from
# bookworm-backports (as some base images have); the second round puts qemu-utils 7.2 back.
for round in 1 2; do
  mapfile -t missing < <(missing_pkgs)
  [ ${#missing[@]} -eq 0 ] && break
  echo "setup: installing Debian packages (round $round): ${missing[*]}"
  [ -f /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  # The package lists may be stale or absent on a fresh machine: refresh them first.
  apt-get update -q >/dev/null || apt-get update
  apt-get install -y -q --no-install-recommends "${missing[@]}"
done
mapfile -t missing < <(missing_pkgs)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: still missing after install: ${missing[*]}" >&2
  exit 1
fi

# PyPI peers (sushy-tools brings bcrypt, which the Redfish tests use for its htpasswd).
# pip is asked only when one is missing: a check per peer is cheaper than pip's own.
mapfile -t PIP_PKGS < <(peer_packages pip)
pip_missing=0
while read -r name; do
  case $name in
    py:*) python3 -c "import ${name#py:}" 2>/dev/null || pip_missing=1 ;;
    *) command -v "$name" >/dev/null 2>&1 || pip_missing=1 ;;
  esac
done < <(awk '!/^[[:space:]]*(#|$)/ && $2 == "pip" { print $1 }' "$PEERS")
if [ "$pip_missing" = 1 ]; then
  echo "setup: installing PyPI packages: ${PIP_PKGS[*]}"
  python3 -m pip install --quiet "${PIP_PKGS[@]}"
  # pyenv installs console scripts behind shims that need a rehash
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

# rustfmt and clippy on the default toolchain (`cargo xtask test` runs both).
rustfmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

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

# Other cargo peers (tools such as cargo-deb): `cargo install` when missing.
while read -r name package; do
  [ "$name" = bpf-linker ] && continue
  command -v "$name" >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/$name" ] || {
    echo "setup: cargo install $package"
    cargo install --locked "$package"
  }
done < <(awk '!/^[[:space:]]*(#|$)/ && $2 == "cargo" { print $1, $3 }' "$PEERS")

# Packages of other Debian suites (`deb` peers, SUITE/PACKAGE): the newest version in that
# suite, downloaded through a private apt state (its own source list, package lists and
# cache under $CACHE/apt-SUITE; the machine's sources are never changed) and unpacked
# into $CACHE/deb/SUITE/PACKAGE. Done again only when a listed file is missing.
mapfile -t DEBS < <(peer_packages deb)
for spec in "${DEBS[@]}"; do
  suite=${spec%%/*} package=${spec#*/}
  need=0
  while read -r name; do
    case $name in
      cache:*) [ -e "$CACHE/${name#cache:}" ] || need=1 ;;
      *) echo "setup: xtask/peers.txt: a deb peer is named cache:PATH, not $name" >&2; exit 1 ;;
    esac
  done < <(awk -v spec="$spec" '!/^[[:space:]]*(#|$)/ && $2 == "deb" && $3 == spec { print $1 }' "$PEERS")
  [ "$need" = 0 ] && continue
  A=$CACHE/apt-$suite
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/download"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" > "$A/sources.list"
  APT_OPTS=(-q -o "Dir::Etc::sourcelist=$A/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
  echo "setup: downloading $package from Debian $suite (unpacked under $CACHE/deb, not installed)"
  apt-get "${APT_OPTS[@]}" update >/dev/null
  rm -f "$A/download/"*.deb
  (cd "$A/download" && apt-get "${APT_OPTS[@]}" download "$package/$suite" >/dev/null)
  D=$CACHE/deb/$suite/$package
  rm -rf "$D" && mkdir -p "$D"
  dpkg-deb -x "$A/download/"*.deb "$D"
  dpkg-deb -f "$A/download/"*.deb Version > "$D/VERSION"
done

# Test boot payload: kernel + NIC modules from Debian's kernel package, and a busybox initrd.
"$ROOT/xtask/scripts/payload.sh" "$CACHE"
echo "setup: ok"
