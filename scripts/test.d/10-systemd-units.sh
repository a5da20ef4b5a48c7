#!/usr/bin/env bash
# The units must pass `systemd-analyze verify`. verify insists that ExecStart's
# binary exists, and /usr/bin/accessd is not installed on a build machine, so a
# copy of each unit is checked with ExecStart pointing at the freshly built one.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (install systemd)" >&2; exit 1; }
cargo build --quiet --bin accessd
bin="$(pwd)/target/debug/accessd"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for unit in systemd/accessd.service systemd/accessd-boot.service; do
  sed "s#/usr/bin/accessd#$bin#g" "$unit" > "$tmp/$(basename "$unit")"
done
# Warnings about units we order against (ssh.service) not existing are fine;
# any other output is a finding, and verify's exit status must be 0.
out="$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
        ./accessd.service ./accessd-boot.service 2>&1)" || { echo "$out" >&2; exit 1; }
bad="$(printf '%s\n' "$out" | grep -v -e '^$' -e 'ssh.service' -e 'sshd.service' || true)"
if [ -n "$bad" ]; then
  echo "systemd-analyze verify reported:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "units verified: accessd.service accessd-boot.service"
# The exposure score, for the record (offline mode needs systemd >= 250).
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  (cd "$tmp" && systemd-analyze security --offline=true --no-pager ./accessd.service | tail -n 3) || true
fi
