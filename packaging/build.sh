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
# The binaries are linked against glibc 2.17 (GLIBC_BASELINE), not the build
# machine's: `cargo zigbuild --target x86_64-unknown-linux-gnu.2.17` links
# them with zig's stubs of that glibc, so they run on every distribution with
# glibc >= 2.17 (RHEL/CentOS 7, Amazon Linux 2, Debian 9+, Ubuntu 16.04+, ...).
# packaging/test.sh checks with objdump -T that no symbol needs a newer one.
#
# cargo-deb, cargo-generate-rpm and cargo-zigbuild are installed with
# `cargo install --locked` at the pinned versions when missing (they land in
# ~/.cargo/bin), and zig itself from PyPI's `ziglang` (`python3 -m pip`), so a
# fresh machine needs only the Rust toolchain and python3 with pip. The .deb's
# library dependency is written in agent/Cargo.toml (libc6 (>= 2.17)), not
# computed by dpkg-shlibdeps from the build machine's newer glibc.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
GLIBC_BASELINE=2.17
TARGET=x86_64-unknown-linux-gnu

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

# Installs crate $1 at version $2 unless `$1 --version` already reports it
# (every cargo-X binary answers --version when run directly).
ensure_tool() {
  local crate=$1 want=$2 have
  have=$("$crate" --version 2>/dev/null | awk '{print $NF}' || true)
  if [ "$have" != "$want" ]; then
    echo "build.sh: installing $crate $want (found: ${have:-none})" >&2
    cargo install --locked --quiet --version "$want" "$crate"
  fi
}
ensure_tool cargo-deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
ensure_tool cargo-zigbuild "$CARGO_ZIGBUILD_VERSION"
# cargo-zigbuild runs `zig` from PATH, or else `python3 -m ziglang`.
if ! command -v zig >/dev/null && ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "build.sh: installing ziglang $ZIGLANG_VERSION from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" >&2
fi

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
# It goes beside the binaries: with --target, both tools map target/release/
# to the real target directory's $TARGET/release (CARGO_TARGET_DIR or
# build.target-dir included).
target_dir=$(cargo metadata --no-deps --format-version 1 --locked \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "build.sh: cannot find cargo's target directory" >&2; exit 1; }
release_dir="$target_dir/$TARGET/release"
mkdir -p "$release_dir"
awk '
  /^[[:space:]]*\[/ { in_trust = ($0 ~ /^[[:space:]]*\[trust\][[:space:]]*(#.*)?$/); print; next }
  in_trust && $0 !~ /^[[:space:]]*(#|$)/ { print "# " $0; next }
  { print }
' config/accessd.toml > "$release_dir/accessd.toml"

# TARGET.2.17: zig links against glibc 2.17's symbol versions; the output
# still goes to $TARGET/release.
cargo zigbuild --release --locked -p accessd --bins --target "$TARGET.$GLIBC_BASELINE" >&2

mkdir -p "$out"
deb_args=(--no-build --package accessd --target "$TARGET" --output "$out")
rpm_args=(--package agent --target "$TARGET")
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
