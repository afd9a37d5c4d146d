#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time and fails if any finds a crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#   scripts/fuzz.sh --build-only                         (build every target, run none)
#
# Installs cargo-fuzz if it is missing. cargo-fuzz passes nightly-only flags (-Z, the
# sanitizer); on a stable toolchain RUSTC_BOOTSTRAP=1 allows them. Each target starts
# from its checked-in seeds (fuzz/corpus/<target>, never written to) plus what earlier
# runs on this machine found (fuzz/work/<target>); a crash leaves its input in
# fuzz/artifacts/<target>/ and the script exits 1 after trying every target.
# Prints one line per target: executions, corpus size, coverage, result.
#
# Environment: FUZZ_SANITIZER (default address; "none" is faster), FUZZ_JOBS (cargo build
# jobs), FUZZ_LOG_DIR (default fuzz/logs). CARGO_PROFILE_RELEASE_OPT_LEVEL=1 (cargo's own
# profile override) builds the targets at opt-level 1: a shorter build for a slower fuzzer
# (CI uses it; an unoptimised build is too slow for the router target's 1 MiB inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=false
if [ "${1:-}" = "--build-only" ]; then
    build_only=true
    shift
fi
secs="${1:-60}"
shift || true
if ! [ "$secs" -gt 0 ] 2>/dev/null; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET > 0] [TARGET...]" >&2
    exit 2
fi
all_targets=(frame_decoder envelope token fs_path manifest policy router)
targets=("${@:-${all_targets[@]}}")
sanitizer="${FUZZ_SANITIZER:-address}"
log_dir="${FUZZ_LOG_DIR:-fuzz/logs}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

build_start=$(date +%s)
jobs=()
[ -n "${FUZZ_JOBS:-}" ] && jobs=(--jobs "$FUZZ_JOBS")
# 16 codegen units: a much shorter build on two cores for a slightly slower fuzzer.
cargo fuzz build --sanitizer "$sanitizer" --codegen-units 16 "${jobs[@]}"
echo "fuzz: built every target in $(( $(date +%s) - build_start )) s" >&2
if $build_only; then
    exit 0
fi

mkdir -p "$log_dir"
failed=()
printf '%-14s %12s %9s %8s %7s  %s\n' target executions exec/s corpus cov result
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    # Absolute paths: the fs_path target changes its working directory.
    dict=()
    case "$t" in
        envelope | router) dict=(-dict="$PWD/fuzz/dicts/envelope.dict") ;;
        fs_path) dict=(-dict="$PWD/fuzz/dicts/fs_path.dict") ;;
        manifest | policy) dict=(-dict="$PWD/fuzz/dicts/toml.dict") ;;
    esac
    log="$log_dir/$t.log"
    # The frame decoder and the router are fed up to 1 MiB + header, to reach the size
    # limit itself.
    max_len=65536
    case "$t" in frame_decoder | router) max_len=1048600 ;; esac
    result=ok
    if ! cargo fuzz run --sanitizer "$sanitizer" --codegen-units 16 "$t" \
        "$PWD/fuzz/work/$t" "$PWD/fuzz/corpus/$t" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" \
        >"$log" 2>&1; then
        result="FAILED (see $log and fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "fuzz/work/$t" -type f | wc -l)
    cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
    printf '%-14s %12s %9s %8s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "${cov:-?}" "$result"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes found in: ${failed[*]}" >&2
    for t in "${failed[@]}"; do
        echo "--- $t: last lines of $log_dir/$t.log" >&2
        tail -40 "$log_dir/$t.log" >&2
    done
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs} s each, no crash"
