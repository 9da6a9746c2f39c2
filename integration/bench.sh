#!/usr/bin/env bash
# The benchmark: airlift against `ctr images import` (local and transfer API) and the physical
# floor, on generated workloads (cached in .cache/bench/), on a throwaway containerd 2.x.
#   bash integration/bench.sh [--runs N] [--only W1,W2,W3,W5,W6] [--out FILE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash integration/provision.sh >/dev/null
command -v gzip >/dev/null || apt-get install -y -qq gzip
cargo build --release --quiet -p airlift -p airlift-integration --bins
exec ./target/release/bench "$@"
