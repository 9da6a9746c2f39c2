#!/usr/bin/env bash
# The long load run for RELIABILITY.md: `integration/load.sh [SMALL] [LARGE] [LARGE_MIB]`
# (default 1000 small archives and 4 of 1024 MiB) dropped at once into a watched directory.
# The CI suite runs the same test smaller (300 + 3 x 128 MiB). Needs root, like the suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash integration/provision.sh
LOAD_SMALL="${1:-1000}" LOAD_LARGE="${2:-4}" LOAD_LARGE_MIB="${3:-1024}" \
    cargo test --locked --features airlift/failpoints -p airlift-integration --test load -- --nocapture 2>&1 | grep -E "^load:|test result|panicked|FAILED"
