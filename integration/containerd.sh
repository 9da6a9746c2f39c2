# shellcheck shell=bash
# Sourced by the installation scripts (image-test.sh, deb-test.sh): a throwaway containerd 2.x
# without CRI, for tests that need one beside a chroot or a container.
#
#   containerd_start BIN_DIR DIR SOCKET   # root, state and log under DIR; sets containerd_pid
#   containerd_stop                       # kills it, if started

containerd_pid=""

containerd_start() {
    local bin="$1" dir="$2" sock="$3"
    mkdir -p "$dir" "$(dirname "$sock")"
    cat >"$dir/containerd.toml" <<EOF
version = 3
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
    PATH="$bin:$PATH" "$bin/containerd" --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
    containerd_pid=$!
    for _ in $(seq 100); do
        "$bin/ctr" --address "$sock" version >/dev/null 2>&1 && return 0
        kill -0 "$containerd_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$dir/containerd.log" >&2
    echo "containerd did not start on $sock" >&2
    return 1
}

containerd_stop() {
    [[ -n "$containerd_pid" ]] || return 0
    kill "$containerd_pid" 2>/dev/null || true
    wait "$containerd_pid" 2>/dev/null || true
    containerd_pid=""
}
