#!/usr/bin/env bash
# The boot suite (issue 13): the .deb installed with dpkg inside booted
# bullseye, bookworm and trixie containers (systemd-nspawn, systemd as PID 1),
# every op driven with accessctl and judged by real ssh logins, sudo, sshd -T
# and the journal. tests/boot/boot.sh says what it checks; tests/README.md
# ("Boot suite") how to run one release alone and read a failure's evidence.
# ACCESSD_BOOT_RELEASES="bookworm" narrows the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC2086 # a list of release names
exec tests/boot/boot.sh ${ACCESSD_BOOT_RELEASES:-bullseye bookworm trixie}
