#!/usr/bin/env bash
# Prints the path of a cached Debian container tree (a tarball) for one
# release, building it with debootstrap when it is missing:
#
#   tests/boot/tree.sh RELEASE        # bullseye | bookworm | trixie
#
# The tarball lives OUTSIDE the clone, under ${ACCESSD_BOOT_CACHE:-/var/cache/accessd-test},
# named by the release and a hash of the package list below, so changing the
# list builds a new tree and a fresh machine builds it from nothing. The
# boot suite unpacks a fresh copy of it for every run; the tarball itself is
# never booted or changed. DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

release=${1:?usage: tree.sh RELEASE}
# What a minimal cloud image has and the suite drives: systemd as PID 1 (with
# dbus for systemctl), OpenSSH, sudo, shadow-utils, procps (/bin/kill, which
# accessd.service's ExecReload runs), iproute2 (ss, for the evidence of a
# failed sshd check), and libcap2-bin (capsh, to read the bounding set).
include=systemd,systemd-sysv,dbus,openssh-server,sudo,passwd,login,procps,iproute2,libcap2-bin
cache=${ACCESSD_BOOT_CACHE:-/var/cache/accessd-test}
key=$(printf '%s\n' "$release" "$include" | sha256sum | cut -c1-12)
tar="$cache/boot-$release-$key.tar"
if [ -s "$tar" ]; then
  echo "$tar"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-$release.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "tree.sh: debootstrap $release (minbase + $include) into $tar" >&2
if ! debootstrap --variant=minbase --include="$include" "$release" "$work/root" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  echo "tree.sh: debootstrap $release failed" >&2
  exit 1
fi
# apt's caches are dead weight in every copy.
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages
tar -C "$work/root" --numeric-owner -cf "$tar.part" .
mv "$tar.part" "$tar"
echo "$tar"
