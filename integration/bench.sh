#!/usr/bin/env bash
# The benchmark: airlift against `ctr images import` (local and transfer API) and the physical
# floor, on generated workloads (cached in .cache/bench/v2/), on a throwaway containerd 2.x.
#   bash integration/bench.sh [--runs N] [--only W1,W2,W3,W5,W6,U,P,S] [--out FILE]
#                             [--baseline BIN]
# (--runs: runs per figure, their medians printed, default 3; --only: these suites alone, the
#  import workloads by a prefix of their name; --out: the figures as Markdown tables in FILE;
#  --help: every flag. Source: integration/src/bin/bench/, a module per suite.)
# (U: W1 imported and unpacked: airlift import --unpack against ctr import --local, which unpacks,
#  and against importing alone and unpacking alone.)
# (P: containerd through airlift as its content proxy plugin, against its built-in store;
#  S: W1's blobs served by airlift serve's registry endpoint to parallel curl clients, against
#  the page cache, a bare sendfile server and docker-registry.)
# (--baseline BIN: another airlift binary, such as a release build of main, measured in the
#  same run beside this tree's on W1-W6 and U, the two taken in turn run by run; airlift's rows
#  get the ratios current / baseline of wall and CPU time. Does a change make imports slower:
#    bash integration/bench.sh --only W1,W3 --baseline ../airlift-main/target/release/airlift
#  BENCHMARKS.md says how to build the old binary.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash integration/provision.sh >/dev/null
command -v gzip >/dev/null || apt-get install -y -qq gzip
cargo build --release --quiet -p airlift -p airlift-integration --bins
exec ./target/release/bench "$@"
