#!/usr/bin/env bash
# Demo: provision a throwaway containerd 2.x, build airlift, import a sample archive and show
# what landed. Everything lives in a temporary directory that is removed at the end.
#   bash integration/demo.sh [ARCHIVE]     (default: the multi-image bundle fixture)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
archive="${1:-integration/fixtures/bundle-ctr-export.tar.zst}"

bash integration/provision.sh >/dev/null
# shellcheck disable=SC1091
. .cache/containerd.env
cargo build --quiet -p airlift

dir="$(mktemp -d /tmp/airlift-demo.XXXXXX)"
cleanup() { [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
cat >"$dir/config.toml" <<EOT
version = 3
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$dir/containerd.sock"
EOT
"$CONTAINERD_2/containerd" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -S "$dir/containerd.sock" ]] && break; sleep 0.1; done

echo "\$ airlift import --address $dir/containerd.sock --all-platforms $archive"
./target/debug/airlift import --address "$dir/containerd.sock" --all-platforms "$archive"
echo
echo "\$ ctr -n k8s.io images ls"
"$CONTAINERD_2/ctr" --address "$dir/containerd.sock" -n k8s.io images ls
echo
echo "\$ ctr -n k8s.io leases ls"
"$CONTAINERD_2/ctr" --address "$dir/containerd.sock" -n k8s.io leases ls
