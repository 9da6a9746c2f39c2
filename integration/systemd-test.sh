#!/usr/bin/env bash
# airlift installed on a node where systemd runs: a Debian bookworm root (debootstrap, minbase,
# with systemd, systemd-sysv and dbus) booted under systemd-nspawn with systemd as its PID 1,
# holding a containerd 2.x (containerd.service) and a stand-in kubelet (kubelet.service, a
# sleep that first writes down the images containerd holds when it starts).
#
#   * install.sh from dist/ (run inside, as an administrator would): airlift.service enabled and
#     active, `airlift status` answers, an archive dropped into /var/lib/airlift/images is
#     imported and pinned (ctr inside); then the node is powered off with the image gone from
#     containerd (airlift stopped, `ctr images rm`) and booted again: airlift imports it again
#     before kubelet starts (kubelet's drop-in orders it after airlift's startup import: kubelet
#     saw the image pinned, and began after airlift became active); `install.sh --uninstall`
#     stops and disables it, the unit is gone, /var/lib/airlift is kept;
#   * the .deb in the same booted root: `dpkg -i` enables and starts nothing, `systemctl enable
#     --now airlift` starts the packaged unit (/usr/bin/airlift), which imports and pins an
#     archive dropped into the packaged configuration's images directory; `dpkg -r` stops it and
#     keeps /var/lib/airlift, `dpkg -P` removes it.
#
# Not part of integration/test.sh nor CI: it needs root, systemd-nspawn (the systemd-container
# package, installed with apt when missing), cgroups it may write, and a first root is about two
# minutes of downloads (then cached). The host needs no systemd: nspawn runs unregistered
# (--register=no --keep-unit) in a cgroup of its own made here, removed at the end.
#
# Usage: bash integration/systemd-test.sh
# Needs dist/ (integration/dist.sh) and provision.sh's containerd 2.x. The root is made once into
# $AIRLIFT_CACHE/debootstrap/bookworm-systemd.tar.gz (default .cache/); AIRLIFT_REFRESH=1 makes
# it again. AIRLIFT_DEBIAN_MIRROR as in provision.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
CACHE="${AIRLIFT_CACHE:-$repo/.cache}"
[[ "$CACHE" == /* ]] || CACHE="$repo/$CACHE"
start_all=$SECONDS

log() { printf 'systemd-test: %s\n' "$*" >&2; }
fail() { printf 'systemd-test: FAIL: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || fail "needs root (systemd-nspawn, cgroups)"
deb="$(find dist -maxdepth 1 -name 'airlift_*.deb' | head -n1)"
tarball="$(find dist -maxdepth 1 -name 'airlift-*-linux-amd64.tar.gz' | head -n1)"
image="$(find dist -maxdepth 1 -name 'airlift-*-image.oci.tar' | head -n1)"
[[ -n "$deb" && -n "$tarball" && -n "$image" && -f dist/install.sh && -f dist/SHA256SUMS ]] ||
    fail "dist/ lacks the .deb, the tarball, the image, install.sh or SHA256SUMS: run integration/dist.sh first"
for tool in systemd-nspawn:systemd-container debootstrap:debootstrap nsenter:util-linux; do
    if ! command -v "${tool%%:*}" >/dev/null; then
        log "installing ${tool#*:}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${tool#*:}" >/dev/null
    fi
done
mirror="${AIRLIFT_DEBIAN_MIRROR:-$(
    sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' |
        grep -E '/debian/?$' | head -n1 || true
)}"
mirror="${mirror:-http://deb.debian.org/debian}"
[[ -f "$CACHE/containerd.env" ]] || bash integration/provision.sh >/dev/null
ctd_bin="$(sed -n 's/^CONTAINERD_2=//p' "$CACHE/containerd.env")"
[[ -x "$ctd_bin/containerd" && -x "$ctd_bin/ctr" ]] || fail "no containerd 2.x in $ctd_bin (run integration/provision.sh)"
ref="$(tar -xOf "$image" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["io.containerd.image.name"])')"

# The cgroup hierarchies nspawn will use: a hybrid host's name=systemd and unified ones, or the
# unified /sys/fs/cgroup.
cgroup_roots=()
for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
    mountpoint -q "$h" && cgroup_roots+=("$h")
done
((${#cgroup_roots[@]})) || cgroup_roots=(/sys/fs/cgroup)

machine="airlift-systemd-test-$$"
scratch="$(mktemp -d /tmp/airlift-systemd-test.XXXXXX)"
r="$scratch/root"
nspawn_pid=""
leader=""

# stop: power the container off (nspawn turns SIGTERM into an orderly shutdown), SIGKILL after 90 s.
stop() {
    [[ -n "$nspawn_pid" ]] || return 0
    kill -TERM "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 900); do
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
        log "the container did not power off in 90 s: killing systemd-nspawn"
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    wait "$nspawn_pid" 2>/dev/null || true
    nspawn_pid=""
    leader=""
}

cleanup() {
    local status=$?
    if ((status)) && [[ -n "$leader" ]]; then
        log "the container's journal, last lines:"
        in_sd journalctl --no-pager -n 40 >&2 2>/dev/null || true
    fi
    stop
    local h
    for h in "${cgroup_roots[@]}"; do
        [[ -d "$h/$machine" ]] && find "$h/$machine" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "/run/systemd/nspawn/propagate/$machine"
    # nspawn's mounts live in its own mount namespace; nothing of the root should be mounted here.
    if findmnt -rno TARGET | grep -q "^$scratch"; then
        findmnt -rno TARGET | grep "^$scratch" | sort -r | xargs -r umount -l
    fi
    rm -rf "$scratch"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# in_sd CMD...: CMD inside the running container (all its namespaces), as root with a plain PATH.
in_sd() {
    nsenter -t "$leader" -a -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 "$@"
}
# prop UNIT PROPERTY: one property of a unit, as systemctl show gives it.
prop() { in_sd systemctl show -P "$2" "$1"; }

# boot: start the root under systemd-nspawn, systemd its PID 1, and wait until systemd has started
# everything (is-system-running: running or degraded).
boot() {
    local t0=$SECONDS h state=""
    for h in "${cgroup_roots[@]}"; do mkdir -p "$h/$machine"; done
    # nspawn --keep-unit runs in its own cgroup (payload and supervisor below it): ours, not the
    # caller's.
    # shellcheck disable=SC2016 # expanded by the inner shell
    bash -c 'for h in "${@:2:$1}"; do echo $$ >"$h/cgroup.procs"; done; shift $(($1 + 1)); exec "$@"' \
        cgroup "${#cgroup_roots[@]}" "${cgroup_roots[@]/%//$machine}" \
        systemd-nspawn --boot --directory="$r" --machine="$machine" --register=no --keep-unit \
        --console=read-only >"$scratch/console.log" 2>&1 &
    nspawn_pid=$!
    for _ in $(seq 300); do
        leader="$(pgrep -P "$nspawn_pid" -x systemd || true)"
        [[ -n "$leader" ]] && break
        kill -0 "$nspawn_pid" 2>/dev/null || { tail -n 20 "$scratch/console.log" >&2; fail "systemd-nspawn exited at boot"; }
        sleep 0.1
    done
    [[ -n "$leader" ]] || { tail -n 20 "$scratch/console.log" >&2; fail "no systemd under systemd-nspawn after 30 s"; }
    for _ in $(seq 120); do
        state="$(in_sd systemctl is-system-running 2>/dev/null || true)"
        [[ "$state" == running || "$state" == degraded ]] && break
        sleep 0.5
    done
    [[ "$state" == running ]] || {
        in_sd systemctl --failed --no-pager >&2 || true
        fail "systemd in the container is '$state', not running"
    }
    log "booted under systemd-nspawn in $((SECONDS - t0))s (container PID 1 = host PID $leader)"
}

# pinned: dist/'s image is in containerd (k8s.io) and pinned, as ctr inside sees it.
pinned() { in_sd ctr -n k8s.io images ls | grep "^$ref " | grep -q 'io.cri-containerd.pinned=pinned'; }
# drop DIR TRIES: the image archive written beside DIR's files and renamed in (as an operator's
# copy should be), then up to TRIES × 0.2 s for airlift to import and pin it; the journal's end
# when it does not.
drop() {
    in_sd sh -c "mkdir -p '$1' && cp /root/image.oci.tar '$1/.image.part' && mv '$1/.image.part' '$1/image.oci.tar'"
    for _ in $(seq "$2"); do
        pinned && return 0
        sleep 0.2
    done
    in_sd journalctl -u airlift --no-pager | tail -n 20 >&2
    return 1
}

# --- the root --------------------------------------------------------------------------------

base="$CACHE/debootstrap/bookworm-systemd.tar.gz"
mkdir -p "$CACHE/debootstrap"
if [[ ! -f "$base" || "${AIRLIFT_REFRESH:-0}" == 1 ]]; then
    t0=$SECONDS
    log "bookworm: debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus from $mirror"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$scratch/boot" "$mirror" \
        >"$scratch/boot.log" 2>&1 || { tail -n 20 "$scratch/boot.log" >&2; fail "debootstrap bookworm"; }
    tar -C "$scratch/boot" -czf "$base.tmp" . && mv "$base.tmp" "$base"
    rm -rf "${scratch:?}/boot"
    log "root made in $((SECONDS - t0))s"
fi
mkdir -p "$r"
tar -C "$r" -xzf "$base"
echo "$machine" >"$r/etc/hostname"

# containerd 2.x as a plain node has it (CRI off: nothing here runs pods).
install -m 0755 "$ctd_bin/containerd" "$ctd_bin/ctr" "$r/usr/local/bin/"
[[ -x "$ctd_bin/containerd-shim-runc-v2" ]] && install -m 0755 "$ctd_bin/containerd-shim-runc-v2" "$r/usr/local/bin/"
mkdir -p "$r/etc/containerd"
cat >"$r/etc/containerd/config.toml" <<'EOF'
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]
[grpc]
  address = "/run/containerd/containerd.sock"
EOF
cat >"$r/etc/systemd/system/containerd.service" <<'EOF'
[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
Type=notify
ExecStart=/usr/local/bin/containerd --config /etc/containerd/config.toml
Delegate=yes
KillMode=process
Restart=always

[Install]
WantedBy=multi-user.target
EOF
# kubelet's stand-in: it writes down what containerd holds the moment it starts.
cat >"$r/etc/systemd/system/kubelet.service" <<'EOF'
[Unit]
Description=kubelet (stand-in: records the images present at its start, then sleeps)
After=containerd.service
Wants=containerd.service

[Service]
ExecStart=/bin/sh -c '/usr/local/bin/ctr -n k8s.io images ls >/run/kubelet-saw-images; exec sleep infinity'

[Install]
WantedBy=multi-user.target
EOF
systemctl --root="$r" enable containerd.service kubelet.service >/dev/null 2>&1 ||
    fail "systemctl --root enable containerd.service kubelet.service"
mkdir -p "$r/root/dist"
cp dist/install.sh "$tarball" dist/SHA256SUMS "$deb" "$r/root/dist/"
cp "$image" "$r/root/image.oci.tar"

# --- install.sh on a live systemd ------------------------------------------------------------

boot
[[ "$(in_sd systemctl is-active containerd.service)" == active ]] || fail "containerd.service is not active"
t0=$SECONDS
in_sd sh /root/dist/install.sh >"$scratch/out" 2>&1 || { cat "$scratch/out" >&2; fail "install.sh"; }
grep -q "systemd is not running here" "$scratch/out" && { cat "$scratch/out" >&2; fail "install.sh did not see systemd"; }
for step in daemon-reload "enable airlift.service" "restart airlift.service"; do
    grep -qF "running: systemctl $step" "$scratch/out" || { cat "$scratch/out" >&2; fail "install.sh did not run systemctl $step"; }
done
log "install.sh ran in $((SECONDS - t0))s (systemctl daemon-reload, enable, restart)"
[[ "$(in_sd systemctl is-enabled airlift.service)" == enabled ]] || fail "airlift.service is not enabled after install.sh"
[[ "$(in_sd systemctl is-active airlift.service)" == active ]] ||
    { in_sd journalctl -u airlift --no-pager | tail -n 20 >&2; fail "airlift.service is not active after install.sh"; }
[[ "$(prop airlift.service FragmentPath)" == /etc/systemd/system/airlift.service ]] || fail "airlift.service is not install.sh's unit"
[[ "$(prop kubelet.service DropInPaths)" == *kubelet.service.d/airlift-wait.conf* ]] ||
    fail "kubelet.service does not load airlift's drop-in: $(prop kubelet.service DropInPaths)"
[[ " $(prop kubelet.service After) " == *" airlift.service "* ]] || fail "kubelet.service is not ordered after airlift.service"
in_sd airlift status >"$scratch/status" 2>&1 || { cat "$scratch/status" >&2; fail "airlift status does not answer"; }
log "airlift.service enabled and active; airlift status answers: $(head -n1 "$scratch/status")"

# An archive dropped into the images directory (written beside it, then renamed in).
t0=$SECONDS
drop /var/lib/airlift/images 300 ||
    fail "$ref (images/image.oci.tar) not imported and pinned: $(in_sd ctr -n k8s.io images ls)"
in_sd airlift ls | grep -q image.oci.tar || fail "airlift ls does not show images/image.oci.tar: $(in_sd airlift ls)"
log "images/image.oci.tar dropped in: $ref imported and pinned in $((SECONDS - t0))s"

# A boot: the image gone from containerd while airlift was stopped; kubelet must start after
# airlift has imported it again.
in_sd systemctl stop airlift.service
in_sd ctr -n k8s.io images rm "$ref" >/dev/null || fail "ctr images rm $ref"
pinned && fail "$ref still in containerd after ctr images rm"
stop
boot
[[ "$(in_sd systemctl is-active airlift.service)" == active ]] || fail "airlift.service is not active after a boot"
[[ "$(in_sd systemctl is-active kubelet.service)" == active ]] ||
    { in_sd journalctl -u kubelet --no-pager | tail -n 20 >&2; fail "kubelet.service is not active after a boot"; }
pinned || fail "$ref not imported again at boot"
in_sd cat /run/kubelet-saw-images >"$scratch/kubelet-saw" 2>&1 || true
grep "^$ref " "$scratch/kubelet-saw" | grep -q 'io.cri-containerd.pinned=pinned' ||
    fail "kubelet started before $ref was imported and pinned; it saw: $(cat "$scratch/kubelet-saw")"
ready="$(prop airlift.service ActiveEnterTimestampMonotonic)"
kubelet_began="$(prop kubelet.service InactiveExitTimestampMonotonic)"
((ready > 0 && kubelet_began >= ready)) ||
    fail "kubelet.service began (${kubelet_began} µs) before airlift.service was ready (${ready} µs)"
log "at boot: airlift ready at $((ready / 1000)) ms, kubelet began at $((kubelet_began / 1000)) ms and saw $ref pinned"

# --uninstall: stopped, disabled, unit gone, state kept.
in_sd sh /usr/local/share/airlift/install.sh --uninstall >"$scratch/out" 2>&1 ||
    { cat "$scratch/out" >&2; fail "install.sh --uninstall"; }
[[ "$(in_sd systemctl is-active airlift.service || true)" == inactive ]] || fail "airlift.service still active after --uninstall"
[[ "$(prop airlift.service LoadState)" == not-found ]] ||
    fail "airlift.service still loaded after --uninstall: $(prop airlift.service LoadState)"
in_sd systemctl is-enabled airlift.service >/dev/null 2>&1 && fail "airlift.service still enabled after --uninstall"
[[ -z "$(find "$r/etc/systemd/system" -name 'airlift*')" ]] ||
    fail "--uninstall left $(find "$r/etc/systemd/system" -name 'airlift*' | tr '\n' ' ')"
[[ "$(prop kubelet.service DropInPaths)" != *airlift* ]] || fail "kubelet.service still loads airlift's drop-in"
[[ -f "$r/var/lib/airlift/images/image.oci.tar" ]] || fail "--uninstall removed /var/lib/airlift"
[[ "$(in_sd systemctl is-active kubelet.service)" == active ]] || fail "--uninstall stopped kubelet.service"
log "install.sh --uninstall: airlift.service stopped, disabled and gone; /var/lib/airlift kept"

# --- the .deb in the same booted root --------------------------------------------------------

rm -rf "$r/var/lib/airlift" "$r/etc/airlift"
in_sd ctr -n k8s.io images rm "$ref" >/dev/null || fail "ctr images rm $ref"
in_sd sh -c 'dpkg -i /root/dist/airlift_*.deb' >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log" >&2; fail "dpkg -i"; }
[[ "$(in_sd systemctl is-enabled airlift.service || true)" == disabled ]] || fail "dpkg -i enabled airlift.service"
[[ "$(in_sd systemctl is-active airlift.service || true)" == inactive ]] || fail "dpkg -i started airlift.service"
[[ "$(prop airlift.service FragmentPath)" == /lib/systemd/system/airlift.service ]] ||
    fail "airlift.service is not the packaged unit: $(prop airlift.service FragmentPath)"
in_sd systemctl enable --now airlift.service >"$scratch/out" 2>&1 ||
    { cat "$scratch/out" >&2; in_sd journalctl -u airlift --no-pager | tail -n 20 >&2; fail "systemctl enable --now airlift (packaged unit)"; }
[[ "$(in_sd systemctl is-active airlift.service)" == active ]] || fail "the packaged airlift.service is not active"
[[ "$(prop airlift.service ExecStart)" == *"path=/usr/bin/airlift "* ]] ||
    fail "the packaged unit does not run /usr/bin/airlift: $(prop airlift.service ExecStart)"
in_sd airlift status >"$scratch/status" 2>&1 || { cat "$scratch/status" >&2; fail "airlift status (packaged) does not answer"; }
log ".deb: dpkg -i started nothing; systemctl enable --now airlift: active, airlift status answers"
# The packaged configuration's images directory (postinst makes it).
dir="$(sed -n 's/^images_dirs = \["\([^"]*\)".*/\1/p' "$r/etc/airlift/config.toml")"
[[ -n "$dir" ]] || fail "no images_dirs in the packaged /etc/airlift/config.toml"
drop "$dir" 150 || fail "$ref ($dir/image.oci.tar) not imported by the packaged unit"
log ".deb: $dir/image.oci.tar imported and pinned by the packaged unit"
in_sd dpkg -r airlift >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log" >&2; fail "dpkg -r"; }
[[ "$(in_sd systemctl is-active airlift.service || true)" == inactive ]] || fail "airlift.service still active after dpkg -r"
[[ "$(prop airlift.service LoadState)" == not-found ]] || fail "airlift.service still loaded after dpkg -r"
[[ -d "$r/var/lib/airlift" ]] || fail "dpkg -r removed /var/lib/airlift"
in_sd dpkg -P airlift >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log" >&2; fail "dpkg -P"; }
[[ ! -e "$r/var/lib/airlift" ]] || fail "dpkg -P left /var/lib/airlift"
[[ -z "$(find "$r/etc/systemd/system" -name 'airlift*')" ]] || fail "dpkg -P left an enablement of airlift.service"
log ".deb: dpkg -r stopped airlift.service and kept /var/lib/airlift; dpkg -P removed it"

stop
log "ok ($((SECONDS - start_all))s)"
