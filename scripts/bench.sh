#!/usr/bin/env bash
# Runs every Strata benchmark in release mode and prints the figures recorded in
# docs/BENCHMARKS.md. Starts its own stack (supervisor with the built-in graph) in a
# temporary runtime/state dir and stops it on exit. Takes about ten minutes on 2 cores.
#   scripts/bench.sh            full run
#   scripts/bench.sh --quick    shorter measurements
set -euo pipefail
cd "$(dirname "$0")/.."
quick=()
secs=3
if [ "${1:-}" = "--quick" ]; then quick=(-- --quick); secs=1; fi

cargo build --release --workspace --bins --quiet
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"

echo "== IPC round trip vs bare echo (crates/ipc/benches/roundtrip.rs)"
cargo bench --quiet -p strata-ipc --bench roundtrip "${quick[@]}" 2>/dev/null
echo "== tokens (crates/cap/benches/tokens.rs)"
cargo bench --quiet -p strata-cap --bench tokens "${quick[@]}" 2>/dev/null
echo "== identity.issue in-process server (crates/identity/benches/issue.rs)"
STRATA_LOG=error cargo bench --quiet -p strata-identity --bench issue "${quick[@]}" 2>/dev/null

echo "== fs.read in-process router vs same-size echo, and fs RSS (crates/fs/benches/read.rs)"
STRATA_LOG=error cargo bench --quiet -p strata-fs --bench read "${quick[@]}" 2>/dev/null
echo "== supervisor cold start, crash to Healthy, RSS (crates/supervisor/benches/lifecycle.rs)"
STRATA_LOG=error cargo bench --quiet -p strata-supervisor --bench lifecycle "${quick[@]}" 2>/dev/null

echo "== cluster: revocation propagation node a -> node b over 100 revocations (crates/e2e/tests/cluster.rs, real etcd)"
STRATA_LOG=error cargo test --quiet --release -p strata-e2e --test cluster -- \
    revocations_on_a_are_enforced_on_b_and_propagation_is_measured --nocapture 2>/dev/null | grep -E 'propagation|SKIPPED' || true

work=$(mktemp -d)
sup=""
cleanup() { [ -n "$sup" ] && kill "$sup" 2>/dev/null && wait "$sup" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/run" "$work/state" "$work/export"
export STRATA_RUNTIME_DIR=$work/run STRATA_STATE_DIR=$work/state STRATA_FS_EXPORT_ROOTS=$work/export STRATA_LOG=error
./target/release/strata-supervisor & sup=$!
for _ in $(seq 200); do
    ./target/release/strata-ctl --service fs sys.health >/dev/null 2>&1 && break
    sleep 0.05
done
echo "== strata-bench against the live stack (release), each mode beside its echo floor"
./target/release/strata-bench --duration "$secs" --fs-dir "$work/export"
