#!/usr/bin/env bash
# Runs one fuzz target under AFL++ for a while, seeded from its corpus, and prints its
# figures; new crashes are listed (copy each into crates/fuzz/corpus/TARGET/ once fixed).
#
#   scripts/fuzz.sh TARGET [SECONDS]      (default 600; TARGET as in crates/fuzz/corpus/)
#
# Needs cargo-afl (`cargo install cargo-afl && cargo afl config --build`); builds the
# harness in crates/fuzz/afl/target; findings go to crates/fuzz/afl/target/out/TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-600}
corpus=crates/fuzz/corpus/$target
[ -d "$corpus" ] || { echo "no corpus for $target in crates/fuzz/corpus/" >&2; exit 2; }
command -v cargo-afl >/dev/null || { echo "cargo-afl is not installed: cargo install cargo-afl && cargo afl config --build" >&2; exit 2; }
(cd crates/fuzz/afl && cargo afl build --release --bin "$target" -q)
out=crates/fuzz/afl/target/out/$target
mkdir -p "$out"
export AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1
# -V: stop after SECONDS; -t: a run taking more than 2 s counts as a hang.
cargo afl fuzz -V "$seconds" -t 2000 -i "$corpus" -o "$out" \
    "crates/fuzz/afl/target/release/$target" > "$out.log" 2>&1 || true
stats=$out/default/fuzzer_stats
[ -f "$stats" ] || { echo "afl-fuzz did not start; see $out.log" >&2; tail -20 "$out.log" >&2; exit 1; }
get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
printf '%s: %s runs in %s s, %s paths, edge coverage %s, %s crashes, %s hangs\n' \
    "$target" "$(get execs_done)" "$(get run_time)" "$(get corpus_count)" \
    "$(get bitmap_cvg)" "$(get saved_crashes)" "$(get saved_hangs)"
ls "$out/default/crashes" 2>/dev/null | grep -v README || true
