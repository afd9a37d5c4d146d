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
