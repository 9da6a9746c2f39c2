#!/usr/bin/env bash
# Provision everything airlift's end-to-end tests need:
#
#   * Debian build/test packages (protobuf-compiler, runc, zstd, ...), installed
#     with the system's apt only when one of them is missing;
#   * two containerd releases, unpacked (not installed) into the cache dir:
#       $CACHE/containerd-2/    containerd 2.x  from Debian sid
#       $CACHE/containerd-1.7/  containerd 1.7.x from Debian trixie
#   * cosign 3.x (a static binary), unpacked the same way, for the signature
#     verification tests:
#       $CACHE/cosign/          cosign from Debian sid
#     all fetched with a private apt configuration (own sources list, state and
#     cache dirs under $CACHE/apt) so the system's apt setup is never touched.
#
# CACHE is $AIRLIFT_CACHE (relative paths are taken from the repo root), or
# <repo root>/.cache by default.
# Prints CONTAINERD_2=<bin dir>, CONTAINERD_17=<bin dir> and COSIGN=<binary>
# and writes the same lines into $CACHE/containerd.env, which the test harness
# reads. containerd is required; cosign is not: when it cannot be fetched the
# script warns, leaves COSIGN= out, and the verification tests skip.
#
# Idempotent: once everything is in place, a rerun does no network access.
# Set AIRLIFT_REFRESH=1 to fetch the newest containerd and cosign packages again, and
# AIRLIFT_DEBIAN_MIRROR to override the Debian mirror (default: the one the
# system's apt sources use).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
CACHE="${AIRLIFT_CACHE:-$repo_root/.cache}"
[[ "$CACHE" == /* ]] || CACHE="$repo_root/$CACHE" # relative: to the repo root, as in the harness
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"

log() { printf 'provision: %s\n' "$*" >&2; }
warn() { printf 'provision: warning: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------
# 1. System packages
# ---------------------------------------------------------------------------
# package name -> a command it provides ("-" if dpkg -s alone decides)
declare -A system_packages=(
    [protobuf-compiler]=protoc
    [runc]=runc
    [zstd]=zstd
    [lz4]=lz4
    [bzip2]=bzip2
    [ca-certificates]=-
    [debian-archive-keyring]=-
    [tar]=tar
    [gzip]=gzip
    # Clients and a peer of the registry endpoint's tests and benchmark.
    [skopeo]=skopeo
    [docker-registry]=docker-registry
    [curl]=curl
    [openssl]=openssl
    # Network namespaces and veth links: several nodes on one machine.
    [iproute2]=ip
    # Installation tests: unit files verified, install.sh linted, the image written, the
    # Kubernetes manifests validated (kubernetes-validate in a venv), static linking checked.
    [systemd]=systemd-analyze
    [shellcheck]=shellcheck
    [python3]=python3
    [python3-venv]=-
    [file]=file
)

missing=()
for pkg in "${!system_packages[@]}"; do
    cmd="${system_packages[$pkg]}"
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    elif [[ "$cmd" != - ]] && ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

apt_updated=0
if ((${#missing[@]})); then
    log "installing missing packages: ${missing[*]}"
    apt-get update -qq
    apt_updated=1
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------------------
# 2. containerd releases
# ---------------------------------------------------------------------------
dir_2="$CACHE/containerd-2"
dir_17="$CACHE/containerd-1.7"
bin_2="$dir_2/usr/bin"
bin_17="$dir_17/usr/bin"

have_tree() { [[ -x "$1/containerd" && -x "$1/ctr" && -x "$1/containerd-shim-runc-v2" ]]; }

# The Debian mirror the system's apt uses (first URI ending in /debian).
debian_mirror() {
    if [[ -n "${AIRLIFT_DEBIAN_MIRROR:-}" ]]; then
        echo "${AIRLIFT_DEBIAN_MIRROR%/}"
        return
    fi
    local uri
    uri="$(
        {
            cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'
        } | grep -E '^(https?|file)://[^ ]*/debian/?$' | head -n1 || true
    )"
    uri="${uri:-http://deb.debian.org/debian}"
    while [[ "$uri" == */ ]]; do uri="${uri%/}"; done
    echo "$uri"
}

# The private apt configuration's options, once apt_setup has run.
apt_opts=()
apt_dir="$CACHE/apt"

# apt_setup: write the private apt configuration (sid and trixie) and fetch its
# package lists, once per run.
apt_setup() {
    ((${#apt_opts[@]})) && return
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    # sid and trixie are signed with the trixie archive keys; bookworm's
    # keyring package ships them since 2023.3+deb12u1.
    if [[ ! -e /usr/share/keyrings/debian-archive-trixie-automatic.gpg ]]; then
        log "upgrading debian-archive-keyring (trixie keys missing)"
        ((apt_updated)) || apt-get update -qq
        apt-get install -y -qq debian-archive-keyring >/dev/null
    fi

    local mirror
    mirror="$(debian_mirror)"
    mkdir -p "$apt_dir/etc" "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    cat >"$apt_dir/etc/sources.list" <<EOF
deb [signed-by=$keyring] $mirror sid main
deb [signed-by=$keyring] $mirror trixie main
EOF
    # Hooks from the system's apt.conf.d (docker-clean, appstream) act on the
    # system's cache; they have no business running for this private setup.
    cat >"$apt_dir/etc/apt.conf" <<'EOF'
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
    local opts=(
        -c "$apt_dir/etc/apt.conf"
        -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State=$apt_dir/state"
        -o "Dir::Cache=$apt_dir/cache"
    )
    log "fetching package lists for sid and trixie from $mirror"
    apt-get "${opts[@]}" -qq update ||
        die "apt-get update for sid/trixie failed (if signatures could not be verified, upgrade debian-archive-keyring)"
    apt_opts=("${opts[@]}")
}

fetch_containerd() {
    apt_setup
    local opts=("${apt_opts[@]}") v2 v17
    v2="$(apt-cache "${opts[@]}" madison containerd | awk -F' *[|] *' '$3 ~ / sid\/main / {print $2; exit}')"
    v17="$(apt-cache "${opts[@]}" madison containerd | awk -F' *[|] *' '$3 ~ / trixie\/main / {print $2; exit}')"
    [[ -n "$v2" ]] || die "no containerd package in sid"
    [[ -n "$v17" ]] || die "no containerd package in trixie"
    [[ "$v2" == 2.* ]] || die "sid has containerd $v2, expected 2.x"
    [[ "$v17" == 1.7.* ]] || die "trixie has containerd $v17, expected 1.7.x"
    log "downloading containerd $v2 (sid) and $v17 (trixie)"
    rm -f "$apt_dir/debs/"*.deb
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" -qq download "containerd=$v2" "containerd=$v17")

    extract "$apt_dir/debs/containerd_${v2//:/%3a}_"*.deb "$dir_2"
    extract "$apt_dir/debs/containerd_${v17//:/%3a}_"*.deb "$dir_17"
    echo "$v2" >"$dir_2/debian-version"
    echo "$v17" >"$dir_17/debian-version"
    rm -f "$apt_dir/debs/"*.deb
}

# extract DEB DIR: unpack DEB into a fresh DIR (atomically replaced).
extract() {
    local deb="$1" dest="$2" tmp="$2.tmp.$$"
    [[ -f "$deb" ]] || die "missing download $deb"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    dpkg-deb -x "$deb" "$tmp"
    have_tree "$tmp/usr/bin" || die "$deb has no usr/bin/{containerd,ctr,containerd-shim-runc-v2}"
    rm -rf "$dest"
    mv "$tmp" "$dest"
}

if [[ "${AIRLIFT_REFRESH:-0}" == 1 ]] || ! have_tree "$bin_2" || ! have_tree "$bin_17"; then
    fetch_containerd
fi

# ---------------------------------------------------------------------------
# 3. cosign
# ---------------------------------------------------------------------------
dir_cosign="$CACHE/cosign"
cosign="$dir_cosign/usr/bin/cosign"

# fetch_cosign: sid's cosign 3.x unpacked into $dir_cosign (atomically
# replaced); returns nonzero (after a warning) when it cannot.
fetch_cosign() {
    apt_setup
    local opts=("${apt_opts[@]}") v deb tmp="$dir_cosign.tmp.$$"
    v="$(apt-cache "${opts[@]}" madison cosign | awk -F' *[|] *' '$3 ~ / sid\/main / {print $2; exit}')"
    [[ -n "$v" ]] || { warn "no cosign package in sid"; return 1; }
    [[ "$v" == 3.* ]] || { warn "sid has cosign $v, expected 3.x"; return 1; }
    log "downloading cosign $v (sid)"
    rm -f "$apt_dir/debs/"*.deb
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" -qq download "cosign=$v") ||
        { warn "apt-get download cosign=$v failed"; return 1; }
    deb="$(echo "$apt_dir/debs/cosign_${v//:/%3a}_"*.deb)"
    [[ -f "$deb" ]] || { warn "missing download $deb"; return 1; }
    rm -rf "$tmp"
    mkdir -p "$tmp"
    dpkg-deb -x "$deb" "$tmp"
    rm -f "$apt_dir/debs/"*.deb
    [[ -x "$tmp/usr/bin/cosign" ]] || { warn "$deb has no usr/bin/cosign"; rm -rf "$tmp"; return 1; }
    echo "$v" >"$tmp/debian-version"
    rm -rf "$dir_cosign"
    mv "$tmp" "$dir_cosign"
}

if [[ "${AIRLIFT_REFRESH:-0}" == 1 ]] || [[ ! -x "$cosign" ]]; then
    fetch_cosign || warn "cosign not provisioned: the signature verification tests will skip"
fi

# ---------------------------------------------------------------------------
# 4. Verify and publish
# ---------------------------------------------------------------------------
check_version() {
    local bin="$1" want="$2" out
    out="$("$bin/containerd" --version)" || die "$bin/containerd --version failed"
    # e.g. "containerd github.com/containerd/containerd/v2 2.1.9~ds1 2.1.9~ds1-5"
    [[ "$(awk '{print $3}' <<<"$out")" == $want* ]] || die "$bin/containerd is not $want*: $out"
    "$bin/ctr" --version >/dev/null || die "$bin/ctr --version failed"
    log "$out"
}
check_version "$bin_2" 2.
check_version "$bin_17" 1.7.

env_file="$CACHE/containerd.env"
env_content="CONTAINERD_2=$bin_2
CONTAINERD_17=$bin_17"
if [[ -x "$cosign" ]]; then
    # Debian's build reports "GitVersion: devel": the package's version says which it is.
    "$cosign" version >/dev/null 2>&1 || die "$cosign version failed"
    cosign_version="$(cat "$dir_cosign/debian-version" 2>/dev/null || true)"
    [[ "$cosign_version" == 3.* ]] || die "$cosign is not 3.x: ${cosign_version:-no $dir_cosign/debian-version}"
    log "cosign $cosign_version"
    env_content+="
COSIGN=$cosign"
fi
if [[ ! -f "$env_file" ]] || [[ "$(cat "$env_file")" != "$env_content" ]]; then
    printf '%s\n' "$env_content" >"$env_file.tmp.$$"
    mv "$env_file.tmp.$$" "$env_file"
fi
printf '%s\n' "$env_content"
