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
# nix-instantiate checks that every .nix file parses and that the module renders the
# golden manifest (crates/supervisor/tests/nix.rs). Debian's nix-bin is enough: the
# checks evaluate builtins only and never fetch nixpkgs.
if ! command -v nix-instantiate >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y nix-bin
    else
        echo "nix-instantiate not found: install Debian's nix-bin (apt-get install nix-bin, as root)" >&2
        echo "or Nix itself; until then the Nix checks print SKIPPED" >&2
    fi
fi
