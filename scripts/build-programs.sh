#!/usr/bin/env bash
# Builds the command-line programs from crates.io that the execution tests run under the
# engine and under the official wasmtime runtime: ripgrep, comrak and sd, for
# wasm32-wasip1, from their published sources at pinned versions with their own lock files
# (--locked), stripped. They land in target/programs/bin and are kept between runs: a
# program already there is not built again (delete the directory to rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/programs
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
build() {
    local name=$1 crate=$2 version=$3
    shift 3
    [ -f "$out/bin/$name.wasm" ] && return
    echo "building $crate $version for wasm32-wasip1"
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
        cargo install --quiet --locked --target wasm32-wasip1 --root "$out" \
        "$crate" --version "$version" "$@"
}
build rg ripgrep 15.2.0
# Without syntect's highlighting, whose default needs the C library oniguruma.
build comrak comrak 0.59.0 --no-default-features --features cli
build sd sd 1.0.0
