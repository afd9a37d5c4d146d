#!/usr/bin/env bash
# Runs every Strata benchmark in release mode and prints the figures recorded in
# docs/BENCHMARKS.md. Starts its own stack (supervisor with the built-in graph) in a
# temporary runtime/state dir and stops it on exit. Takes about twenty minutes on 2 cores.
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
# Idle memory of every process of the stack, 2 s after fs answered (VmRSS, and of it the
# anonymous and file-backed parts), from /proc/<pid>/status.
sleep 2
echo "== idle memory per process after boot (kB, /proc/<pid>/status)"
rss() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %s  ", $1, $2}' "/proc/$1/status"; }
guard=$(./target/release/strata-ctl --service supervisor supervisor.status 2>/dev/null \
    | sed -n 's/.*"orphan_guard": *\([0-9]*\).*/\1/p')
printf '%-18s %s\n' strata-supervisor "$(rss "$sup")"
[ -n "$guard" ] && printf '%-18s %s\n' "orphan guard" "$(rss "$guard")"
for p in $(pgrep -P "$sup"); do
    [ "$p" = "$guard" ] && continue
    printf '%-18s %s\n' "$(tr -d '\0' <"/proc/$p/cmdline" | xargs basename)" "$(rss "$p")"
done

echo "== strata-bench against the live stack (release), each mode beside its echo floor"
./target/release/strata-bench --duration "$secs" --fs-dir "$work/export"

# fs memory and fs.open latency with 1k, 10k and 100k handles open: a standalone identity
# and fs (the supervisor gives its services a clean environment, so raised quotas are
# passed on fs's own command line here), with an open-files limit above 100k.
echo "== fs memory and fs.open latency with N handles open (strata-bench --mode fs.handles)"
(
    set -euo pipefail
    h=$work/handles
    mkdir -p "$h/run" "$h/state" "$h/export"
    # 100k handles need an open-files limit above ~100,300; raising the hard limit needs
    # CAP_SYS_RESOURCE. Without it the largest row is what the limit allows.
    ulimit -Hn 200000 2>/dev/null && ulimit -n 200000 || ulimit -n "$(ulimit -Hn)"
    top=100000
    if [ "$(ulimit -n)" -lt 101000 ]; then
        top=$(( $(ulimit -n) - 1000 ))
        echo "(open-files limit $(ulimit -n), cannot be raised here: the largest row is $top handles, not 100,000)"
    fi
    handles=(--handles 1000 --handles 10000 --handles "$top")
    [ ${#quick[@]} -gt 0 ] && handles=(--handles 1000 --handles 10000)
    export STRATA_RUNTIME_DIR=$h/run STRATA_STATE_DIR=$h/state
    ./target/release/strata-identity & id=$!
    trap 'kill $id ${fs:-} 2>/dev/null || true' EXIT
    for _ in $(seq 200); do [ -S "$h/run/identity.sock" ] && break; sleep 0.05; done
    q=100000
    ./target/release/strata-fs --export-root "$h/export" --max-handles "$q" --max-handles-per-cap "$q" \
        --max-handles-per-lineage "$q" --max-handles-per-caller "$q" & fs=$!
    for _ in $(seq 200); do [ -S "$h/run/fs.sock" ] && break; sleep 0.05; done
    ./target/release/strata-bench --mode fs.handles "${handles[@]}" --fs-dir "$h/export"
)

# identity.issue with 1k, 100k and 1M capabilities on record (the store is filled through
# identity.issue itself; the 1M fill takes a few minutes). Last: it fills the stack's store.
echo "== identity.issue with N capabilities on record (strata-bench --mode identity.issue.scale)"
issued=(--issued 1000 --issued 100000 --issued 1000000)
[ ${#quick[@]} -gt 0 ] && issued=(--issued 1000 --issued 10000)
./target/release/strata-bench --mode identity.issue.scale "${issued[@]}" --duration "$secs"

echo "== scaling: Guard::authorize p50 and guard memory with 1k/100k/1M revocations held (crates/guard/benches/authorize.rs)"
cargo bench --quiet -p strata-guard --bench authorize "${quick[@]}" 2>/dev/null
echo "== scaling: a verifier's full revocation load after an identity restart, 1k/100k/1M revoked (--quick: to 100k) (crates/identity/benches/revocation_load.rs)"
STRATA_LOG=error cargo bench --quiet -p strata-identity --bench revocation_load "${quick[@]}" 2>/dev/null
echo "== scaling: cold start with 1/10/100 services is in the supervisor lifecycle output above (or: cargo bench -p strata-supervisor --bench lifecycle -- --scale)"
