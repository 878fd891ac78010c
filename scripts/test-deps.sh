#!/usr/bin/env bash
# Installs what three tests need beyond Rust: Debian's Chromium (the collector's viewer
# test), Debian's Prometheus (the node's scrape test) and the official OpenTelemetry Python
# SDK (the collector's interop test). Without them those tests are skipped, except under
# CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r crates/collector/tests/python/requirements.txt
