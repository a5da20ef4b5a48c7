#!/usr/bin/env bash
# Packaging (issue 8): build the .deb and .rpm with packaging/build.sh, inspect
# them, lint the .deb, and install, upgrade, remove and purge them in throwaway
# Debian trees (never on this machine's root). packaging/test.sh says what it
# checks; it builds the packages itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec packaging/test.sh
