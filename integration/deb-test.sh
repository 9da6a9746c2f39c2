#!/usr/bin/env bash
# airlift installed into fresh Debian roots (debootstrap, minbase) of bookworm and trixie, both
# ways a node gets it:
#
#   * the .deb: `dpkg -i` (nothing enabled or started, /var/lib/airlift made), `airlift
#     --version`, `airlift import --help`, man page and completions in place; then `airlift
#     import` inside the root of dist/'s container image against a containerd 2.x whose socket is
#     the root's /run/containerd/containerd.sock (imported and pinned, seen from outside with
#     ctr); `dpkg -r` keeps /var/lib/airlift and the conffiles; `dpkg -P` removes both;
#   * install.sh from dist/ run inside the root (systemd is not running there: it says so and
#     runs no systemctl), on a plain containerd + kubelet layout (a kubelet.service) and on a k3s
#     layout (/var/lib/rancher/k3s, a k3s.service): `--dry-run` changes nothing; the install
#     writes /etc/airlift/config.toml for that node, the unit and the node's drop-in; the
#     installed binary imports against the containerd; `--uninstall` removes what it wrote and
#     keeps /var/lib/airlift, `--uninstall --purge` removes that too.
#
# Not part of integration/test.sh: a new root is about two minutes of downloads and unpacking
# (then cached); integration/dist-check.sh does the cheap `dpkg --root` and install.sh checks
# there.
#
# Usage: bash integration/deb-test.sh [SUITE...]      (default: bookworm trixie)
# Needs root, debootstrap (installed with apt when missing), dist/ (integration/dist.sh) and
# provision.sh's containerd 2.x. Each suite's root is made once into $AIRLIFT_CACHE/debootstrap/
# (default .cache/) as a tarball; AIRLIFT_REFRESH=1 makes it again. AIRLIFT_DEBIAN_MIRROR as in
# provision.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
# shellcheck source=integration/containerd.sh
. integration/containerd.sh
CACHE="${AIRLIFT_CACHE:-$repo/.cache}"
[[ "$CACHE" == /* ]] || CACHE="$repo/$CACHE"

log() { printf 'deb-test: %s\n' "$*" >&2; }
fail() { printf 'deb-test: FAIL: %s\n' "$*" >&2; exit 1; }

suites=("$@")
((${#suites[@]})) || suites=(bookworm trixie)
deb="$(find dist -maxdepth 1 -name 'airlift_*.deb' | head -n1)"
[[ -n "$deb" ]] || fail "no dist/airlift_*.deb: run integration/dist.sh first"
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null
fi
mirror="${AIRLIFT_DEBIAN_MIRROR:-$(
    sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' |
        grep -E '/debian/?$' | head -n1 || true
)}"
mirror="${mirror:-http://deb.debian.org/debian}"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
image="dist/airlift-$version-image.oci.tar"
[[ -f "$image" && -f dist/install.sh ]] || fail "no $image or dist/install.sh: run integration/dist.sh first"
[[ -f "$CACHE/containerd.env" ]] || bash integration/provision.sh >/dev/null
ctd_bin="$(sed -n 's/^CONTAINERD_2=//p' "$CACHE/containerd.env")"
[[ -x "$ctd_bin/containerd" ]] || fail "no containerd 2.x in $ctd_bin (run integration/provision.sh)"
ref="$(tar -xOf "$image" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["io.containerd.image.name"])')"

scratch="$(mktemp -d /tmp/airlift-deb-test.XXXXXX)"
trap 'containerd_stop; rm -rf "$scratch"' EXIT
mkdir -p "$CACHE/debootstrap"

# imports_in_root ROOT BINARY: BINARY (a path inside ROOT), run chrooted, imports dist/'s image
# against the containerd on ROOT/run/containerd/containerd.sock; the image is then there and
# pinned as ctr sees it from outside.
imports_in_root() {
    local r="$1" bin="$2" sock="$1/run/containerd/containerd.sock"
    rm -rf "$scratch/containerd"
    containerd_start "$ctd_bin" "$scratch/containerd" "$sock" || fail "$suite: containerd"
    cp "$image" "$r/tmp/image.oci.tar"
    in_root "$bin" import --address /run/containerd/containerd.sock /tmp/image.oci.tar \
        >"$scratch/import.log" 2>&1 || { cat "$scratch/import.log" >&2; fail "$suite: $bin import inside the root"; }
    "$ctd_bin/ctr" --address "$sock" -n k8s.io images ls | grep "^$ref " |
        grep -q 'io.cri-containerd.pinned=pinned' ||
        fail "$suite: $ref not imported and pinned: $("$ctd_bin/ctr" --address "$sock" -n k8s.io images ls)"
    containerd_stop
    rm -f "$r/tmp/image.oci.tar" "$sock" "$sock.ttrpc"
}

# listing ROOT: every path of the root but /tmp, /proc, /dev and /run, with type, mode and size.
listing() { (cd "$1" && find . \( -path ./tmp -o -path ./proc -o -path ./dev -o -path ./run \) -prune -o -printf '%p %y %m %s\n' | sort); }
has() { grep -qF -- "$2" "$1" || fail "$suite: $1 lacks: $2"; }

for suite in "${suites[@]}"; do
    start=$SECONDS
    base="$CACHE/debootstrap/$suite.tar.gz"
    if [[ ! -f "$base" || "${AIRLIFT_REFRESH:-0}" == 1 ]]; then
        log "$suite: debootstrap --variant=minbase from $mirror"
        debootstrap --variant=minbase "$suite" "$scratch/boot" "$mirror" >"$scratch/boot.log" 2>&1 ||
            { tail -n 20 "$scratch/boot.log" >&2; fail "debootstrap $suite"; }
        tar -C "$scratch/boot" -czf "$base.tmp" . && mv "$base.tmp" "$base"
        rm -rf "${scratch:?}/boot"
        log "$suite: root made in $((SECONDS - start))s"
    fi
    r="$scratch/$suite"
    mkdir -p "$r"
    tar -C "$r" -xzf "$base"
    cp "$deb" "$r/tmp/airlift.deb"
    in_root() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

    in_root dpkg -i /tmp/airlift.deb >"$scratch/dpkg.log" 2>&1 ||
        { cat "$scratch/dpkg.log" >&2; fail "$suite: dpkg -i"; }
    said="$(in_root airlift --version)"
    log "$suite: installed; airlift --version: $said"
    in_root airlift import --help | grep -q -- '--unpack' || fail "$suite: airlift import --help"
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    [[ "$(in_root dpkg-query -W -f '${Status}' airlift)" == "install ok installed" ]] ||
        fail "$suite: not installed"
    [[ -d "$r/var/lib/airlift" ]] || fail "$suite: no /var/lib/airlift"
    [[ -f "$r/usr/share/man/man1/airlift-import.1.gz" ]] || fail "$suite: no man page"
    [[ -f "$r/usr/share/bash-completion/completions/airlift" ]] || fail "$suite: no completion"
    [[ -f "$r/lib/systemd/system/airlift.service" ]] || fail "$suite: no unit"
    [[ -z "$(find "$r/etc/systemd" -name 'airlift*' 2>/dev/null)" ]] || fail "$suite: a unit is enabled"
    imports_in_root "$r" /usr/bin/airlift
    log "$suite: the packaged airlift imported $ref against a containerd, pinned"

    echo kept >"$r/var/lib/airlift/state"
    in_root dpkg -r airlift >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log" >&2; fail "$suite: dpkg -r"; }
    [[ ! -e "$r/usr/bin/airlift" ]] || fail "$suite: dpkg -r left the binary"
    [[ -f "$r/var/lib/airlift/state" ]] || fail "$suite: dpkg -r removed /var/lib/airlift"
    [[ -f "$r/etc/airlift/config.toml" ]] || fail "$suite: dpkg -r removed the conffile"
    in_root dpkg -P airlift >"$scratch/dpkg.log" 2>&1 || { cat "$scratch/dpkg.log" >&2; fail "$suite: dpkg -P"; }
    [[ ! -e "$r/var/lib/airlift" ]] || fail "$suite: dpkg -P left /var/lib/airlift"
    [[ ! -e "$r/etc/airlift" ]] || fail "$suite: dpkg -P left /etc/airlift"
    log "$suite: .deb ok ($((SECONDS - start))s)"

    # install.sh inside the root, from dist/ as carried to the node.
    mkdir -p "$r/tmp/dist"
    cp dist/install.sh dist/airlift-*-linux-amd64.tar.gz dist/SHA256SUMS "$r/tmp/dist/"
    # A plain containerd + kubelet node.
    mkdir -p "$r/lib/systemd/system"
    printf '[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\n' >"$r/lib/systemd/system/kubelet.service"
    listing "$r" >"$scratch/before"
    in_root sh /tmp/dist/install.sh --dry-run >"$scratch/out" 2>&1 || { cat "$scratch/out" >&2; fail "$suite: install.sh --dry-run"; }
    listing "$r" >"$scratch/after"
    diff "$scratch/before" "$scratch/after" >&2 || fail "$suite: install.sh --dry-run changed the root"
    has "$scratch/out" "nothing was changed"
    in_root sh /tmp/dist/install.sh >"$scratch/out" 2>&1 || { cat "$scratch/out" >&2; fail "$suite: install.sh"; }
    has "$scratch/out" "systemd is not running here"
    has "$r/etc/airlift/config.toml" 'address = "/run/containerd/containerd.sock"'
    has "$r/etc/airlift/config.toml" 'images_dirs = ["/var/lib/airlift/images"]'
    has "$r/etc/systemd/system/airlift.service" "ExecStart=/usr/local/bin/airlift serve"
    has "$r/etc/systemd/system/kubelet.service.d/airlift-wait.conf" "/usr/local/bin/airlift"
    [[ -d "$r/var/lib/airlift/images" ]] || fail "$suite: install.sh made no images directory"
    imports_in_root "$r" /usr/local/bin/airlift
    in_root sh /usr/local/share/airlift/install.sh --uninstall >"$scratch/out" 2>&1 || { cat "$scratch/out" >&2; fail "$suite: install.sh --uninstall"; }
    for gone in usr/local/bin/airlift etc/systemd/system/airlift.service \
        etc/systemd/system/kubelet.service.d/airlift-wait.conf usr/local/share/airlift; do
        [[ ! -e "$r/$gone" ]] || fail "$suite: install.sh --uninstall left /$gone"
    done
    [[ -d "$r/var/lib/airlift" ]] || fail "$suite: install.sh --uninstall removed /var/lib/airlift"
    log "$suite: install.sh on a containerd + kubelet node: dry run, install, import, uninstall"
    # A k3s node.
    rm -rf "$r/var/lib/airlift" "$r/etc/airlift"
    mkdir -p "$r/var/lib/rancher/k3s/agent" "$r/etc/systemd/system"
    printf '[Unit]\nDescription=k3s\n[Service]\nExecStart=/usr/local/bin/k3s server\n' >"$r/etc/systemd/system/k3s.service"
    in_root sh /tmp/dist/install.sh >"$scratch/out" 2>&1 || { cat "$scratch/out" >&2; fail "$suite: install.sh (k3s)"; }
    has "$r/etc/airlift/config.toml" 'address = "/run/k3s/containerd/containerd.sock"'
    has "$r/etc/airlift/config.toml" 'images_dirs = ["/var/lib/rancher/k3s/agent/images"]'
    has "$r/etc/airlift/config.toml" 'hosts_dir = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"'
    has "$r/etc/systemd/system/k3s.service.d/airlift.conf" "airlift"
    [[ ! -e "$r/etc/systemd/system/k3s-agent.service.d" ]] || fail "$suite: a drop-in for the absent k3s-agent.service"
    in_root sh /usr/local/share/airlift/install.sh --uninstall --purge >"$scratch/out" 2>&1 || { cat "$scratch/out" >&2; fail "$suite: install.sh --uninstall --purge"; }
    for gone in usr/local/bin/airlift etc/systemd/system/airlift.service \
        etc/systemd/system/k3s.service.d/airlift.conf etc/airlift var/lib/airlift; do
        [[ ! -e "$r/$gone" ]] || fail "$suite: install.sh --uninstall --purge left /$gone"
    done
    log "$suite: install.sh on a k3s node: install, uninstall --purge"
    rm -rf "$r"
    log "$suite: ok ($((SECONDS - start))s)"
done
