#!/usr/bin/env bash
# Installs what four tests need beyond Rust: Debian's Chromium (the collector's viewer
# test), Debian's Prometheus (the node's scrape test), iproute2's `ip` (the chaos suite's
# partition, in a network namespace) and the official OpenTelemetry Python SDK (the
# collector's interop test). Without them those tests are skipped (the partition falls back
# to SIGSTOP), except under CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r crates/collector/tests/python/requirements.txt
