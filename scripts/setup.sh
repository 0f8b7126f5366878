#!/usr/bin/env bash
# Installs everything rtgate needs to build, run and test on Debian 12.
# Idempotent; run as root (or with sudo). Retries while another apt holds the lock.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(build-essential cmake pkg-config
      libwebsockets-dev libwebsockets-evlib-uv libuv1-dev
      libnats-dev nats-server libmsgpack-dev libjansson-dev libcriterion-dev libssl-dev
      python3 python3-websockets python3-msgpack python3-pytest python3-jwt python3-cryptography
      openssl python3-yaml haproxy procps curl
      clang libclang-rt-14-dev) # the fuzz targets (libFuzzer, ASan, UBSan)
# The JavaScript tests (tests/js): node + npm and Debian's chromium. Debian 12's
# nodejs is 18 (tests/js runs on it with the ws package); a node already on the
# machine (e.g. NodeSource's 20, which ships npm and conflicts with Debian's) is kept.
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)
PKGS+=(chromium)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
for i in 1 2 3 4 5; do
    if $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        exit 0
    fi
    echo "setup: apt failed (try $i), retrying in 10 s" >&2
    sleep 10
done
exit 1
