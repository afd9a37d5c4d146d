#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain. Idempotent; safe to run
# on a fresh machine (as root, Debian) or on a developer machine (skips what is present).
set -euo pipefail

if ! command -v cargo >/dev/null; then
    echo "cargo is required (install Rust with rustup)" >&2
    exit 1
fi
# rustfmt and clippy ship with the toolchain here; make sure the components exist.
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# Debian packages the build and tests need, installed together (one apt-get update):
# - protobuf-compiler: protoc, for etcd-client's generated gRPC code (strata-cluster);
# - etcd-server: a real etcd the cluster tests start on loopback (crates/e2e/tests/cluster.rs);
# - nix-bin: nix-instantiate, see below;
# - prometheus: promtool, which checks a live node's metrics (crates/e2e/tests/metrics.rs).
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v nix-instantiate >/dev/null || missing+=(nix-bin)
# setpriv (util-linux, Essential on Debian): the socket-group test's users (crates/e2e/tests/socket_group.rs).
command -v setpriv >/dev/null || missing+=(util-linux)
# prometheus (promtool) and chromium (the console's browser test, crates/e2e/tests/console.rs,
# with chromedriver from chromium-driver) are installed on their own line below: without
# their recommends.
lean=()
command -v promtool >/dev/null || lean+=(prometheus)
command -v chromium >/dev/null || lean+=(chromium)
command -v chromedriver >/dev/null || lean+=(chromium-driver)
if [ "$((${#missing[@]} + ${#lean[@]}))" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update
        # Packages with a daemon (prometheus, etcd-server) must not start one: refuse
        # every service start while installing (policy-rc.d), also where there is no
        # systemd. An existing policy is left as it is.
        policy=/usr/sbin/policy-rc.d
        made_policy=
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
        fi
        status=0
        if [ "${#missing[@]}" -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" || status=$?
        fi
        if [ "$status" -eq 0 ] && [ "${#lean[@]}" -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${lean[@]}" || status=$?
        fi
        if [ -n "$made_policy" ]; then
            rm -f "$policy"
        fi
        if [ "$status" -ne 0 ]; then
            exit "$status"
        fi
    else
        echo "missing: ${missing[*]} ${lean[*]} (Debian packages; install them as root with apt-get)" >&2
        echo "without protoc the workspace does not build; without etcd (or chromium) the cluster (console) tests print SKIPPED" >&2
    fi
fi
# nix-instantiate checks that every .nix file parses and that the module renders the
# golden manifest (crates/supervisor/tests/nix.rs). Debian's nix-bin is enough: the
# checks evaluate builtins only and never fetch nixpkgs.
if ! command -v nix-instantiate >/dev/null; then
    echo "nix-instantiate not found: the Nix checks print SKIPPED until nix-bin (or Nix) is installed" >&2
fi
