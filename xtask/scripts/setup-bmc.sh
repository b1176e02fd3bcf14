#!/usr/bin/env bash
# Peers for the BMC tests and benchmark that are not Debian packages (idempotent; run by
# setup.sh). The Debian ones (openipmi, ipmitool, freeipmi-tools, openssl, curl) are in
# setup.sh's package list.
#  - sushy-tools (PyPI): Redfish emulator, run with its fake driver on loopback by
#    tests/integration/bmc.rs. It brings bcrypt, which the tests use for its htpasswd.
set -euo pipefail
if ! command -v sushy-emulator >/dev/null 2>&1 || ! python3 -c 'import bcrypt' 2>/dev/null; then
  echo "setup-bmc: installing sushy-tools (Redfish emulator) with pip"
  python3 -m pip install --quiet 'sushy-tools>=2,<3'
  # pyenv installs console scripts behind shims that need a rehash
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
command -v openssl >/dev/null || { echo "setup-bmc: openssl missing (Debian package openssl)" >&2; exit 1; }
echo "setup-bmc: ok ($(sushy-emulator --help >/dev/null 2>&1 && echo sushy-emulator ready))"
