#!/usr/bin/env bash
# Bounded cargo-fuzz runs of the parsers that read attacker-controlled text:
# authorized_keys lines, sshd_config (+ the envelope target of the engine).
# Each target runs FUZZ_SECONDS (default 40 s; 3 targets ≈ 2 min) from the
# committed seeds plus whatever corpus earlier runs left in fuzz/corpus.
# A crash fails the suite; libFuzzer prints the input and saves it under
# fuzz/artifacts/TARGET/ for `cargo fuzz run TARGET ARTIFACT`.
set -euo pipefail
cd "$(dirname "$0")/../.."

# cargo-fuzz builds with nightly-only rustc flags (-Zsanitizer=address and
# other -Z options for libFuzzer's coverage instrumentation). CI has only the
# stable toolchain and cannot download another, so RUSTC_BOOTSTRAP=1 tells
# the stable rustc to accept them. It is set for this script only.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "30-fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

secs=${FUZZ_SECONDS:-40}
for target in authkeys_line sshd_config envelope; do
  echo "== fuzz $target (${secs}s)"
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1
done
echo "30-fuzz: no crashes"
