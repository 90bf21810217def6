#!/usr/bin/env bash
# Short fuzz runs of Cairn's fuzz targets, for CI: builds them (with AddressSanitizer, debug
# assertions and overflow checks), replays the committed corpus, then fuzzes each target for
# FUZZ_SECONDS. Exits non-zero if any input crashes; the input is saved under
# fuzz/artifacts/<target>/ and the command to reproduce it is printed.
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the unstable compiler flags that
# cargo-fuzz passes (-Zsanitizer and friends). New inputs the fuzzer finds go to a scratch
# directory, never into the committed corpus.
#
# Environment:
#   FUZZ_SECONDS   seconds of fuzzing per target (default 30)
#   FUZZ_TARGETS   targets to run (default: all of them)
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
read -r -a targets <<< "${FUZZ_TARGETS:-decode_record open_store}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

# -a: debug assertions and overflow checks, which turn silent wrap-arounds into findings.
flags=(-a)

echo "==> building fuzz targets"
cargo fuzz build "${flags[@]}"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/cairn-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

for target in "${targets[@]}"; do
  echo "==> $target: replaying corpus/$target"
  cargo fuzz run "${flags[@]}" "$target" "corpus/$target" -- -runs=0

  echo "==> $target: fuzzing for ${seconds} s"
  mkdir -p "$scratch/$target"
  # The first corpus directory receives new inputs; the committed one is only read.
  cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1
done

echo "==> fuzzing passed: ${targets[*]}, ${seconds} s each"
