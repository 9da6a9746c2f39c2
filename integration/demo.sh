#!/usr/bin/env bash
# Demo: airlift as a node runs it. Provisions a throwaway containerd 2.x, builds airlift, starts
# `airlift serve` over it, drops an archive into the images directory, shows it imported and
# pinned, strips a pin and shows it restored, removes the archive and shows it released.
# Everything lives in a temporary directory that is removed at the end. Needs root.
#   bash integration/demo.sh [ARCHIVE]     (default: the multi-image bundle fixture)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
archive="${1:-integration/fixtures/bundle-ctr-export.tar.zst}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Provisioning containerd 2.x and 1.7 into .cache/ (Debian packages; quick once cached)"
bash integration/provision.sh >/dev/null
# shellcheck disable=SC1091
. .cache/containerd.env
say "Building airlift (cargo build; a few minutes on a fresh machine, seconds after that)"
cargo build --quiet -p airlift
airlift="$PWD/target/debug/airlift"

dir="$(mktemp -d /tmp/airlift-demo.XXXXXX)"
cleanup() {
    [[ -n "${airlift_pid:-}" ]] && kill "$airlift_pid" 2>/dev/null && wait "$airlift_pid" 2>/dev/null
    [[ -n "${ctd_pid:-}" ]] && kill "$ctd_pid" 2>/dev/null && wait "$ctd_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
sock="$dir/containerd.sock"
ctr() { "$CONTAINERD_2/ctr" --address "$sock" -n k8s.io "$@"; }
images() {
    ctr images ls | awk 'NR == 1 {print "IMAGE", "PIN"; next} $1 !~ /^sha256:/ {print $1, ($0 ~ /io.cri-containerd.pinned=pinned/ ? "pinned" : "-")}' | column -t
}

say "Starting a throwaway containerd in $dir"
cat >"$dir/config.toml" <<EOT
version = 3
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$sock"
EOT
"$CONTAINERD_2/containerd" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done

say "Starting airlift serve: it watches $dir/images (its log: $dir/airlift.log)"
mkdir -p "$dir/images"
"$airlift" serve --address "$sock" --images-dir "$dir/images" --state-dir "$dir/airlift" \
    --socket "$dir/airlift.sock" --settle-ms 300 >"$dir/airlift.log" 2>&1 &
airlift_pid=$!
run "$airlift" wait --socket "$dir/airlift.sock" --timeout 60
echo "(the startup import is done: kubelet could start now)"

say "Dropping $(basename "$archive") into the images directory (copied, then renamed into place)"
name="demo.${archive##*/}"
cp "$archive" "$dir/images/.$name.part"
mv "$dir/images/.$name.part" "$dir/images/$name"
printf 'waiting for the import'
until "$airlift" ls --socket "$dir/airlift.sock" | grep -q '^imported'; do printf .; sleep 0.2; done
echo
run "$airlift" ls --socket "$dir/airlift.sock"
echo
echo "containerd's images, and their pins (kubelet's image GC leaves pinned images alone):"
images

first="$(ctr images ls -q | grep -v '^sha256:' | head -n1)"
say "Someone strips the pin of $first (as k3s does at its start)"
run ctr images label "$first" io.cri-containerd.pinned= >/dev/null
sleep 0.5
echo "half a second later:"
images
grep -m1 "restored from the record" "$dir/airlift.log" | sed 's/^/airlift: /' || true

say "Someone deletes $first (ctr images rm, crictl rmi)"
run ctr images rm "$first" >/dev/null
sleep 0.5
echo "half a second later:"
images
run "$airlift" status --socket "$dir/airlift.sock"

say "Removing the archive: its images are unpinned and its lease released"
run rm "$dir/images/$name"
sleep 1
images
echo
echo "leases left:"
ctr leases ls
say "Done (everything in $dir is removed now)"
