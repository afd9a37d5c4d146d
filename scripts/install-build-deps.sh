#!/usr/bin/env bash
# Installs what building Strata needs beyond the Rust toolchain: protoc, which etcd-client
# (strata-cluster's etcd v3 client) runs at build time to generate its gRPC code.
# Idempotent; does nothing when protoc is already on PATH (or $PROTOC is set).
set -euo pipefail

if [ -n "${PROTOC:-}" ] || command -v protoc >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler
else
    echo "protoc not found: install Debian's protobuf-compiler (apt-get install protobuf-compiler, as root)" >&2
    echo "or point \$PROTOC at a protoc binary" >&2
    exit 1
fi
