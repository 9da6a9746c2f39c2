#!/usr/bin/env bash
# The container image of airlift, end to end, as the DaemonSet runs it: integration/image.sh
# builds it (twice: the bytes must agree), airlift itself imports it into a throwaway containerd
# 2.x, `ctr run` runs it there (runc, overlayfs) with the DaemonSet's host mounts at the host's
# paths — containerd's socket directory, its content root, the images and state directories,
# airlift's socket directory, the config — with every capability dropped, a read-only root and
# no new privileges, as config/kubernetes/airlift.yaml asks; then an archive dropped into the
# images directory must be imported and pinned by the airlift in the container
# (`ctr -n k8s.io images ls`: io.cri-containerd.pinned=pinned), and the daemon must answer on
# its socket from the host. Needs root (containerd, runc) and provision.sh's containerd.
#
#   bash integration/image-test.sh [STATIC_BINARY]
#
# STATIC_BINARY: default target/x86_64-unknown-linux-gnu/release/airlift, the static build
# (RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked
# --target x86_64-unknown-linux-gnu -p airlift); without one the test says so and skips (a
# binary named and missing fails).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
# shellcheck source=integration/containerd.sh
. integration/containerd.sh

fail() {
    printf 'image-test: FAIL: %s\n' "$*" >&2
    [[ -f "${tmp:-}/airlift.log" ]] && { echo "--- the container's log" >&2; tail -n 40 "$tmp/airlift.log" >&2; }
    [[ -f "${tmp:-}/containerd.log" ]] && { echo "--- containerd's log" >&2; grep -i 'error\|level=warn' "$tmp/containerd.log" | tail -n 20 >&2; }
    exit 1
}
ok() { printf 'image-test: ok: %s\n' "$*" >&2; }

bin="${1:-$repo/target/x86_64-unknown-linux-gnu/release/airlift}"
[[ $# -eq 0 || -x "$bin" ]] || fail "no airlift at $bin"
if [[ ! -x "$bin" ]]; then
    echo "image-test: SKIP: no static airlift at $bin (build it with RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --locked --target x86_64-unknown-linux-gnu -p airlift)" >&2
    exit 0
fi
[[ "$(id -u)" == 0 ]] || fail "needs root (containerd, runc)"

CACHE="${AIRLIFT_CACHE:-.cache}"
[[ "$CACHE" == /* ]] || CACHE="$repo/$CACHE"
[[ -f "$CACHE/containerd.env" ]] || bash integration/provision.sh >/dev/null
ctd_bin="$(sed -n 's/^CONTAINERD_2=//p' "$CACHE/containerd.env")"
[[ -x "$ctd_bin/containerd" ]] || fail "no containerd 2.x in $ctd_bin (run integration/provision.sh)"
command -v runc >/dev/null || PATH="$PATH:/usr/sbin:/sbin"

tmp="$(mktemp -d /tmp/airlift-image-test.XXXXXX)"
ctd_pid=""
cleanup() {
    if [[ -n "$ctd_pid" ]]; then
        ctr task kill -s KILL airlift-image-test >/dev/null 2>&1 || true
        sleep 0.5
        ctr task delete airlift-image-test >/dev/null 2>&1 || true
        ctr container delete airlift-image-test >/dev/null 2>&1 || true
        kill "$ctd_pid" 2>/dev/null || true
        wait "$ctd_pid" 2>/dev/null || true
    fi
    # What the snapshotter or runc may still have mounted under the temporary root.
    { grep -o " $tmp/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    [[ -n "${KEEP:-}" ]] || rm -rf "$tmp"
    true
}
trap cleanup EXIT

# --- the image, twice --------------------------------------------------------------------------
start=$SECONDS
image="$(bash integration/image.sh "$bin" "$tmp/dist")"
cp "$image" "$tmp/first.tar"
bash integration/image.sh "$bin" "$tmp/dist" >/dev/null
cmp -s "$image" "$tmp/first.tar" || fail "two builds of the image differ"
tar -tf "$image" | sort >"$tmp/entries"
[[ "$(grep -c '^blobs/sha256/.' "$tmp/entries")" == 3 ]] || fail "expected 3 blobs (config, manifest, one layer): $(cat "$tmp/entries")"
ok "$(basename "$image"): $(du -h "$image" | cut -f1), built twice byte for byte alike ($((SECONDS - start)) s)"

# --- a throwaway containerd 2.x, its socket where a node has it ---------------------------------
mkdir -p "$tmp/root" "$tmp/state" "$tmp/run/containerd" "$tmp/run/airlift" "$tmp/images" "$tmp/airlift-state" "$tmp/etc"
sock="$tmp/run/containerd/containerd.sock"
containerd_start "$ctd_bin" "$tmp" "$sock" || fail "containerd did not start"
ctd_pid="$containerd_pid"
export CONTAINERD_ADDRESS="$sock" CONTAINERD_NAMESPACE=k8s.io
ctr() { "$ctd_bin/ctr" "$@"; }

# --- airlift imports its own image --------------------------------------------------------------
"$bin" import --address "$sock" --namespace k8s.io "$image" >"$tmp/import.out" 2>&1 || { cat "$tmp/import.out" >&2; fail "airlift import of the image"; }
ref="$(tar -xOf "$image" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["io.containerd.image.name"])')"
ctr images ls | grep -q "^$ref " || fail "$ref not imported: $(ctr images ls)"
ctr images ls | grep "^$ref " | grep -q 'io.cri-containerd.pinned=pinned' || fail "$ref not pinned"
ok "airlift imported its own image as $ref, pinned"

# --- run it as the DaemonSet does ---------------------------------------------------------------
content="$tmp/root/io.containerd.content.v1.content"
cat >"$tmp/etc/config.toml" <<EOF
address = "/run/containerd/containerd.sock"
namespace = "k8s.io"
images_dirs = ["/var/lib/airlift/images"]
state_dir = "/var/lib/airlift"
socket = "/run/airlift/airlift.sock"
settle_ms = 200
EOF
mounts=(
    --mount "type=bind,src=$tmp/etc,dst=/etc/airlift,options=rbind:ro"
    --mount "type=bind,src=$tmp/run/containerd,dst=/run/containerd,options=rbind:rw"
    --mount "type=bind,src=$content,dst=$content,options=rbind:rw"
    --mount "type=bind,src=$tmp/airlift-state,dst=/var/lib/airlift,options=rbind:rw"
    --mount "type=bind,src=$tmp/images,dst=/var/lib/airlift/images,options=rbind:rw"
    --mount "type=bind,src=$tmp/run/airlift,dst=/run/airlift,options=rbind:rw"
)
# Every capability of containerd's default set dropped (the DaemonSet's drop: ALL).
caps=()
for c in CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE; do
    caps+=(--cap-drop "CAP_$c")
done
ctr run -d --snapshotter overlayfs --read-only --seccomp "${caps[@]}" "${mounts[@]}" \
    --log-uri "file://$tmp/airlift.log" \
    "$ref" airlift-image-test /usr/local/bin/airlift serve --config /etc/airlift/config.toml >/dev/null ||
    fail "ctr run of $ref"
pid="$(ctr task ls | awk '$1 == "airlift-image-test" {print $2}')"
[[ -n "$pid" ]] || fail "no task: $(ctr task ls)"
grep -Eq '^CapEff:[[:space:]]+0+$' "/proc/$pid/status" || fail "the container has capabilities: $(grep Cap "/proc/$pid/status")"
grep -Eq '^NoNewPrivs:[[:space:]]+1$' "/proc/$pid/status" || fail "the container may gain privileges"
for _ in $(seq 100); do
    [[ -S "$tmp/run/airlift/airlift.sock" ]] && "$bin" wait --socket "$tmp/run/airlift/airlift.sock" --timeout 1 >/dev/null 2>&1 && break
    ctr task ls | grep -q 'airlift-image-test.*RUNNING' || fail "the container stopped: $(ctr task ls)"
    sleep 0.2
done
"$bin" status --socket "$tmp/run/airlift/airlift.sock" >"$tmp/status" 2>&1 || fail "airlift status through the mounted socket: $(cat "$tmp/status")"
ok "the image runs: airlift serve in the container (no capability, read-only root), its startup import done, its socket answering on the host"

# --- an archive dropped into the images directory -----------------------------------------------
fixture=integration/fixtures/busybox-docker.tar
want="docker.io/library/busybox:1.35"
start=$SECONDS
cp "$fixture" "$tmp/images/.busybox.tar.part"
mv "$tmp/images/.busybox.tar.part" "$tmp/images/busybox.tar"
for _ in $(seq 300); do
    ctr images ls | grep "^$want " | grep -q 'io.cri-containerd.pinned=pinned' && break
    ctr task ls | grep -q 'airlift-image-test.*RUNNING' || fail "the container stopped: $(ctr task ls)"
    sleep 0.2
done
ctr images ls | grep "^$want " | grep -q 'io.cri-containerd.pinned=pinned' ||
    fail "$want not imported and pinned by the container: $(ctr images ls)"
"$bin" ls --socket "$tmp/run/airlift/airlift.sock" >"$tmp/ls" 2>&1 || true
grep -q 'busybox.tar' "$tmp/ls" || fail "airlift ls does not show the archive: $(cat "$tmp/ls")"
ok "the container imported $fixture into the host's containerd and pinned $want ($((SECONDS - start)) s)"
[[ -n "$(find "$tmp/airlift-state" -mindepth 1 -not -name images -print -quit)" ]] ||
    fail "nothing recorded in the state directory on the host"
ok "its records are in the host's state directory"
echo "image-test: all passed" >&2
