#!/usr/bin/env bash
# `cargo deny check advisories bans` against deny.toml: no dependency with a
# RustSec vulnerability (or a yanked version, or an unmaintained direct
# dependency), no wildcard version requirement; duplicate versions are
# listed as warnings. deny.toml says why each ignored advisory is ignored.
#
# The advisory database is a git repository cloned from GitHub at run time.
# When it cannot be fetched, advisories cannot be checked: the script says so
# on a line starting with `SKIP:` (scripts/test-all repeats it at the end)
# and still checks bans, which need only Cargo.lock. (--hide-inclusion-graph:
# `cargo deny check bans --show-stats` without it says where a duplicate
# comes from.)
set -euo pipefail
cd "$(dirname "$0")/../.."

version=0.20.2
# Installing it from source took 2 min 45 s of wall time on a 2-core
# machine shared with other builds (193 s of CPU); once per machine.
if ! cargo deny --version >/dev/null 2>&1; then
  echo "20-deny: installing cargo-deny $version"
  cargo install --locked "cargo-deny@$version"
fi
echo "20-deny: $(cargo deny --version)"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if cargo deny --locked fetch db >"$log" 2>&1; then
  cargo deny --locked check --hide-inclusion-graph advisories bans
else
  # The first line that says what went wrong (git's `fatal:`, cargo-deny's
  # error), bounded: it is printed, not parsed.
  reason=$({ grep -m1 'fatal:' "$log" || grep -m1 -iE 'error' "$log" || true; } |
    tr -s '[:space:]' ' ' | cut -c1-200)
  echo "SKIP: advisory database unreachable (${reason:-cargo deny fetch db failed}); advisories NOT checked, checking bans only"
  cargo deny --locked check --hide-inclusion-graph bans
fi
echo "20-deny: ok"
