#!/usr/bin/env bash
# Installs what five tests need beyond Rust: Debian's Chromium (the collector's viewer
# test), Debian's Prometheus (the node's scrape test), iproute2's `ip` (the chaos suite's
# partition, in a network namespace), `openssl` (certificates made as users make them, for
# the TLS tests and docs/collector.md's session), `curl` (the docs' shell sessions, run as
# written), libfaketime (a node whose clock is ahead, for the viewer's clock-skew test), the
# official OpenTelemetry Python SDK (the
# collector's interop test), and Debian's clang, lld, wasi-libc and compiler-rt for wasm32
# with the official wasmtime runtime's Python package (C programs built for WASI, run by the
# engine and by the reference runtime), and three crates.io programs built for
# wasm32-wasip1 (scripts/build-programs.sh), and from npm Foundry's anvil (the settlement
# contract's tests run against it) and the solc that contracts/package.json pins (which
# checks the committed contract build). Without them those tests are skipped (the
# partition falls back to SIGSTOP), except under CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
[ -d /usr/include/wasm32-wasi ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 ||
    missing+=(libclang-rt-dev-wasm32)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r crates/collector/tests/python/requirements.txt \
    -r crates/execution/tests/programs/requirements.txt
# anvil, a local EVM chain, on PATH; the pinned solc in contracts/node_modules.
command -v anvil >/dev/null 2>&1 || npm install --global --no-fund --no-audit @foundry-rs/anvil@1.7.1
(cd contracts && npm ci --no-fund --no-audit --loglevel=error)
# Rust's wasm32-wasip1 target and the crates.io programs the engine runs beside the
# reference runtime (kept in target/programs between runs).
scripts/build-programs.sh
