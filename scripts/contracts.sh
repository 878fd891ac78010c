#!/usr/bin/env bash
# Compiles the settlement contract with the solc pinned in contracts/package.json (npm) and
# writes contracts/build/*.json (ABI and bytecode, which the node embeds). With --check,
# recompiles and fails if the committed bytes differ from what the pinned compiler makes.
set -euo pipefail
cd "$(dirname "$0")/../contracts"
npm ci --no-fund --no-audit --loglevel=error >/dev/null
node compile.mjs "$@"
