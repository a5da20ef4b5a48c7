#!/usr/bin/env bash
# No dependency is declared that no code uses (issue 14: `sshkeys` sat in
# agent/Cargo.toml for months). cargo-machete reads the manifests and
# searches the sources for each dependency's name; a false positive is
# silenced in the manifest with [package.metadata.cargo-machete] ignored =
# [...] and a comment saying why.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=0.9.2
# Installing it from source took 3 min 30 s of wall time on a 2-core
# machine shared with other builds (112 s of CPU); once per machine.
if ! cargo machete --version >/dev/null 2>&1; then
  echo "21-machete: installing cargo-machete $version"
  cargo install --locked "cargo-machete@$version"
fi
# The workspace, and the fuzz crate that lives outside it.
cargo machete
cargo machete fuzz
echo "21-machete: no unused dependencies"
