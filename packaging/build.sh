#!/usr/bin/env bash
# Build the accessd .deb and .rpm from the release build, in one command:
#
#   packaging/build.sh [--version VERSION] [--out DIR]
#
# --version overrides the package version (default: the crate's, from
#   Cargo.toml); the .deb gets Debian revision "-1" appended. The install test
#   uses it to build an older package to upgrade from.
# --out puts both packages in DIR (default: target/packages).
# Standard output is exactly the two packages' paths, .deb first, then .rpm;
# progress goes to standard error.
#
# cargo-deb and cargo-generate-rpm are installed with `cargo install --locked`
# at the pinned versions when missing (they land in ~/.cargo/bin, which CI
# caches), so a fresh machine needs only the Rust toolchain and dpkg-dev
# (dpkg-shlibdeps computes the .deb's library dependencies).
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

version=""
out="$(dirname "$0")/../target/packages"
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
out=$(realpath -m -- "$out")   # relative to the caller's directory, not the repo's
cd "$(dirname "$0")/.."

# Installs $1 at version $2 unless `cargo $3 --version` already reports it.
ensure_tool() {
  local crate=$1 want=$2 sub=$3 have
  have=$(cargo "$sub" --version 2>/dev/null | awk '{print $NF}' || true)
  if [ "$have" != "$want" ]; then
    echo "build.sh: installing $crate $want (found: ${have:-none})" >&2
    cargo install --locked --quiet --version "$want" "$crate"
  fi
}
ensure_tool cargo-deb "$CARGO_DEB_VERSION" deb
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" generate-rpm

# The units and the example config come from other parts of the tree; a
# package without them would install an agent that never starts.
for f in systemd/accessd.service systemd/accessd-boot.service config/accessd.toml; do
  [ -f "$f" ] || { echo "build.sh: missing $f" >&2; exit 1; }
done

# The packaged /etc/accessd/accessd.toml is config/accessd.toml with the
# entries of its [trust] table commented out. The example trusts a published
# test key (seed 00 01 .. 1f); shipped as is, every instance that boots the
# image would obey whoever reads the example. With no trusted key the agent
# accepts nothing until the operator adds the control plane's key.
# It goes beside the binaries: both tools map target/release/ to the real
# target directory (CARGO_TARGET_DIR or build.target-dir included).
target_dir=$(cargo metadata --no-deps --format-version 1 --locked \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "build.sh: cannot find cargo's target directory" >&2; exit 1; }
mkdir -p "$target_dir/release"
awk '
  /^[[:space:]]*\[/ { in_trust = ($0 ~ /^[[:space:]]*\[trust\][[:space:]]*(#.*)?$/); print; next }
  in_trust && $0 !~ /^[[:space:]]*(#|$)/ { print "# " $0; next }
  { print }
' config/accessd.toml > "$target_dir/release/accessd.toml"

cargo build --release --locked -p accessd --bins >&2

mkdir -p "$out"
deb_args=(--no-build --package accessd --output "$out")
rpm_args=(--package agent)
if [ -n "$version" ]; then
  deb_args+=(--deb-version "$version-1")
  rpm_args+=(--set-metadata "version = \"$version\"")
fi
# cargo deb prints the package's path as its last line.
deb=$(cargo deb "${deb_args[@]}" | tail -n 1)
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
rpm="$out/accessd-${version:-$crate_version}-1.$(uname -m).rpm"
cargo generate-rpm "${rpm_args[@]}" --output "$rpm" >&2
[ -f "$deb" ] || { echo "build.sh: cargo deb did not report its package (got '$deb')" >&2; exit 1; }
echo "$deb"
echo "$rpm"
