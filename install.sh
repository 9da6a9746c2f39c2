#!/bin/sh
# install.sh — put airlift on a node from the release tarball next to this script, with no
# network: the air gap first, in the style of k3s's install.sh (INSTALL_K3S_SKIP_DOWNLOAD=true).
#
#   sh install.sh                  # install, enable and start airlift.service
#   sh install.sh --dry-run        # print every step, change nothing
#   sh install.sh --uninstall      # remove what install.sh installed; keep /var/lib/airlift
#   sh install.sh --uninstall --purge   # ... and remove /var/lib/airlift and /etc/airlift
#
# It finds airlift-*-linux-amd64.tar.gz next to itself (bin/airlift, config/, man pages,
# completions), recognises the node — k3s, rke2 or plain containerd — and writes
# /etc/airlift/config.toml for it (containerd's socket, the images directory, k3s/rke2's registry
# hosts directory), installs the binary, airlift.service and the drop-ins that node needs (k3s and
# rke2: start airlift with them; kubelet: wait for airlift's startup import), then
# `systemctl daemon-reload` and enables and starts airlift. An existing /etc/airlift/config.toml
# is kept. Every file it writes is listed in /usr/local/share/airlift/install.files, which
# --uninstall reads; a copy of this script is kept beside it.
#
# Environment (named like k3s's):
#   INSTALL_AIRLIFT_SKIP_DOWNLOAD  accepted for k3s habits; install.sh never downloads anything
#   INSTALL_AIRLIFT_TARBALL        the release tarball (default: the airlift-*-linux-amd64.tar.gz
#                                  next to this script, or the unpacked tree around it)
#   INSTALL_AIRLIFT_BIN_DIR        where the binary goes (default /usr/local/bin)
#   INSTALL_AIRLIFT_SYSTEMD_DIR    where units and drop-ins go (default /etc/systemd/system)
#   INSTALL_AIRLIFT_FLAVOR         k3s | rke2 | containerd: skip the detection
#   INSTALL_AIRLIFT_ROOT           install under this root prefix (tests, image builds);
#                                  systemctl is not run then
#   INSTALL_AIRLIFT_SKIP_ENABLE    true: do not enable (nor start) airlift.service
#   INSTALL_AIRLIFT_SKIP_START     true: enable but do not start it
#   INSTALL_AIRLIFT_DRY_RUN        true: as --dry-run
#   INSTALL_AIRLIFT_PURGE          true: as --purge
set -eu

# --- helpers ---------------------------------------------------------------------------------

info() { printf '[INFO]  %s\n' "$*" >&2; }
warn() { printf '[WARN]  %s\n' "$*" >&2; }
fatal() {
    printf '[ERROR] %s\n' "$*" >&2
    exit 1
}

is_true() {
    case "${1:-}" in
    true | TRUE | True | 1 | yes) return 0 ;;
    *) return 1 ;;
    esac
}

usage() {
    sed -n '2,/^set -eu$/{/^set -eu$/d;s/^# \{0,1\}//;p;}' "$0"
}

# --- arguments and environment ---------------------------------------------------------------

DRY_RUN=false
is_true "${INSTALL_AIRLIFT_DRY_RUN:-}" && DRY_RUN=true
PURGE=false
is_true "${INSTALL_AIRLIFT_PURGE:-}" && PURGE=true
ACTION=install
while [ $# -gt 0 ]; do
    case "$1" in
    --dry-run) DRY_RUN=true ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=true ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) fatal "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

ROOT="${INSTALL_AIRLIFT_ROOT:-}"
ROOT="${ROOT%/}"
if [ -n "$ROOT" ] && [ ! -d "$ROOT" ]; then
    fatal "INSTALL_AIRLIFT_ROOT=$ROOT is not a directory"
fi
BIN_DIR="${INSTALL_AIRLIFT_BIN_DIR:-/usr/local/bin}"
SYSTEMD_DIR="${INSTALL_AIRLIFT_SYSTEMD_DIR:-/etc/systemd/system}"
SHARE_DIR=/usr/local/share/airlift
MANIFEST="$SHARE_DIR/install.files"
CONFIG=/etc/airlift/config.toml
STATE_DIR=/var/lib/airlift
SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"

# The files this run wrote (absolute paths without ROOT), one a line.
WRITTEN=""

# run CMD...: run it, or print it in a dry run.
run() {
    if $DRY_RUN; then
        info "dry run: would run: $*"
    else
        info "running: $*"
        "$@"
    fi
}

# mkdir_p DIR (without ROOT)
mkdir_p() {
    [ -d "$ROOT$1" ] && return 0
    if $DRY_RUN; then
        info "dry run: would create directory $ROOT$1"
    else
        mkdir -p "$ROOT$1"
    fi
}

# install_file SRC DEST MODE: copy SRC to DEST (without ROOT), atomically, and record DEST.
install_file() {
    mkdir_p "$(dirname "$2")"
    if $DRY_RUN; then
        info "dry run: would install $1 as $ROOT$2 (mode $3)"
    else
        info "installing $ROOT$2"
        cp "$1" "$ROOT$2.airlift-tmp"
        chmod "$3" "$ROOT$2.airlift-tmp"
        mv -f "$ROOT$2.airlift-tmp" "$ROOT$2"
    fi
    WRITTEN="$WRITTEN$2
"
}

# write_file DEST MODE: write stdin to DEST (without ROOT), atomically, and record DEST. Feed it
# with a redirection, not a pipe: in a pipe it runs in a subshell and the record is lost.
write_file() {
    mkdir_p "$(dirname "$1")"
    if $DRY_RUN; then
        info "dry run: would write $ROOT$1 (mode $2):"
        sed 's/^/        | /' >&2
    else
        info "writing $ROOT$1"
        cat >"$ROOT$1.airlift-tmp"
        chmod "$2" "$ROOT$1.airlift-tmp"
        mv -f "$ROOT$1.airlift-tmp" "$ROOT$1"
    fi
    WRITTEN="$WRITTEN$1
"
}

# rebin FILE: FILE's text with the binary's path moved to BIN_DIR.
rebin() {
    sed "s:/usr/local/bin/airlift:$BIN_DIR/airlift:g" "$1"
}

# systemctl_run ARGS...: systemctl, unless installing under a root or systemd is absent.
systemctl_run() {
    if [ -n "$ROOT" ]; then
        info "INSTALL_AIRLIFT_ROOT is set: not running systemctl $*"
    elif ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
        warn "systemd is not running here: not running systemctl $*"
    else
        run systemctl "$@"
    fi
}

# unit_exists NAME: a unit file NAME in the root's systemd directories.
unit_exists() {
    for d in "$SYSTEMD_DIR" /etc/systemd/system /usr/local/lib/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
        [ -e "$ROOT$d/$1" ] && return 0
    done
    return 1
}

# --- uninstall -------------------------------------------------------------------------------

uninstall() {
    if [ ! -f "$ROOT$MANIFEST" ]; then
        warn "no $ROOT$MANIFEST: airlift was not installed by install.sh here; nothing to remove"
    else
        systemctl_run disable --now airlift.service || warn "could not stop airlift.service"
        # Lines: SHA256 PATH, as sha256sum writes them.
        while read -r sum path; do
            [ -n "$path" ] || continue
            if [ ! -e "$ROOT$path" ]; then
                continue
            fi
            if [ "$path" = "$CONFIG" ] && ! $PURGE &&
                [ "$(sha256sum "$ROOT$path" | cut -d' ' -f1)" != "$sum" ]; then
                info "keeping $ROOT$path: changed since install.sh wrote it (--purge removes it)"
                continue
            fi
            if $DRY_RUN; then
                info "dry run: would remove $ROOT$path"
            else
                info "removing $ROOT$path"
                rm -f "$ROOT$path"
            fi
        done <"$ROOT$MANIFEST"
        # The directories install.sh may have made, removed only when left empty.
        while read -r _ path; do
            [ -n "$path" ] || continue
            dir="$(dirname "$path")"
            case "$dir" in
            *.service.d | /etc/airlift | "$SHARE_DIR" | "$SHARE_DIR"/*) ;;
            *) continue ;;
            esac
            if ! $DRY_RUN; then rmdir "$ROOT$dir" 2>/dev/null || true; fi
        done <"$ROOT$MANIFEST"
        if $DRY_RUN; then
            info "dry run: would remove $ROOT$MANIFEST"
        else
            rm -f "$ROOT$MANIFEST"
            rmdir "$ROOT$SHARE_DIR/config/kubernetes/k3s" "$ROOT$SHARE_DIR/config/kubernetes" \
                "$ROOT$SHARE_DIR/config" "$ROOT$SHARE_DIR" 2>/dev/null || true
        fi
        systemctl_run daemon-reload
    fi
    if $PURGE; then
        for d in "$STATE_DIR" /etc/airlift; do
            [ -e "$ROOT$d" ] || continue
            if $DRY_RUN; then
                info "dry run: would remove $ROOT$d (--purge)"
            else
                info "removing $ROOT$d (--purge)"
                rm -rf "$ROOT$d"
            fi
        done
    elif [ -d "$ROOT$STATE_DIR" ]; then
        info "keeping the state directory $ROOT$STATE_DIR (--purge or INSTALL_AIRLIFT_PURGE=true removes it)"
    fi
    $DRY_RUN && info "dry run: nothing was changed"
    return 0
}

if [ "$ACTION" = uninstall ]; then
    uninstall
    exit 0
fi

# --- install: the tarball --------------------------------------------------------------------

if [ -n "${INSTALL_AIRLIFT_SKIP_DOWNLOAD:-}" ] && ! is_true "$INSTALL_AIRLIFT_SKIP_DOWNLOAD"; then
    warn "INSTALL_AIRLIFT_SKIP_DOWNLOAD=$INSTALL_AIRLIFT_SKIP_DOWNLOAD: install.sh never downloads; installing from the tarball"
else
    info "install.sh downloads nothing (INSTALL_AIRLIFT_SKIP_DOWNLOAD is always true): installing from the tarball"
fi

case "$(uname -m)" in
x86_64 | amd64) ;;
*) [ -n "$ROOT" ] || fatal "this is a linux-amd64 release; this machine is $(uname -m)" ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/airlift-install.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT INT TERM

TARBALL="${INSTALL_AIRLIFT_TARBALL:-}"
if [ -z "$TARBALL" ]; then
    # shellcheck disable=SC2012 # file names of our own release: no newlines
    n="$(ls -1 "$SCRIPT_DIR"/airlift-*-linux-amd64.tar.gz 2>/dev/null | wc -l)"
    if [ "$n" -gt 1 ]; then
        fatal "several airlift-*-linux-amd64.tar.gz next to install.sh: name one with INSTALL_AIRLIFT_TARBALL"
    elif [ "$n" -eq 1 ]; then
        TARBALL="$(ls -1 "$SCRIPT_DIR"/airlift-*-linux-amd64.tar.gz)"
    fi
fi
if [ -n "$TARBALL" ]; then
    [ -f "$TARBALL" ] || fatal "no tarball $TARBALL"
    sums="$(dirname "$TARBALL")/SHA256SUMS"
    if [ -f "$sums" ] && grep -q " \*\{0,1\}$(basename "$TARBALL")\$" "$sums"; then
        (cd "$(dirname "$TARBALL")" && grep " \*\{0,1\}$(basename "$TARBALL")\$" SHA256SUMS | sha256sum -c --quiet -) ||
            fatal "$TARBALL does not match its SHA256SUMS"
        info "$TARBALL matches SHA256SUMS"
    fi
    info "unpacking $TARBALL"
    tar -xzf "$TARBALL" -C "$WORK"
    SRC="$(find "$WORK" -maxdepth 3 -path '*/bin/airlift' -type f | head -n1)"
    [ -n "$SRC" ] || fatal "$TARBALL holds no bin/airlift"
    SRC="$(dirname "$(dirname "$SRC")")"
elif [ -x "$SCRIPT_DIR/bin/airlift" ]; then
    SRC="$SCRIPT_DIR" # run from the unpacked tarball
    info "installing from the unpacked release $SRC"
else
    fatal "no airlift-*-linux-amd64.tar.gz next to $0 and no INSTALL_AIRLIFT_TARBALL: install.sh downloads nothing; put the release tarball beside it"
fi
for f in airlift.service k3s-airlift.conf kubelet-airlift-wait.conf airlift.toml; do
    [ -f "$SRC/config/$f" ] || fatal "the release holds no config/$f"
done

# --- install: what node is this --------------------------------------------------------------

FLAVOR="${INSTALL_AIRLIFT_FLAVOR:-}"
if [ -n "$FLAVOR" ]; then
    info "flavor $FLAVOR (INSTALL_AIRLIFT_FLAVOR)"
elif [ -d "$ROOT/var/lib/rancher/rke2" ] || [ -x "$ROOT/usr/local/bin/rke2" ] || [ -x "$ROOT/usr/bin/rke2" ]; then
    FLAVOR=rke2 # checked before k3s: rke2 serves its containerd on /run/k3s too
    info "found rke2 ($ROOT/var/lib/rancher/rke2)"
elif [ -d "$ROOT/var/lib/rancher/k3s" ] || [ -S "$ROOT/run/k3s/containerd/containerd.sock" ]; then
    FLAVOR=k3s
    info "found k3s ($ROOT/var/lib/rancher/k3s)"
else
    FLAVOR=containerd
    if [ -S "$ROOT/run/containerd/containerd.sock" ]; then
        info "found containerd ($ROOT/run/containerd/containerd.sock)"
    else
        warn "found neither k3s, rke2 nor containerd's socket: configuring for containerd at /run/containerd/containerd.sock"
    fi
fi

case "$FLAVOR" in
k3s | rke2)
    ADDRESS=/run/k3s/containerd/containerd.sock
    IMAGES_DIR="/var/lib/rancher/$FLAVOR/agent/images"
    HOSTS_DIR="/var/lib/rancher/$FLAVOR/agent/etc/containerd/certs.d"
    ;;
containerd)
    ADDRESS=/run/containerd/containerd.sock
    IMAGES_DIR=/var/lib/airlift/images
    HOSTS_DIR=""
    ;;
*) fatal "INSTALL_AIRLIFT_FLAVOR=$FLAVOR: expected k3s, rke2 or containerd" ;;
esac

# --- install: files --------------------------------------------------------------------------

$DRY_RUN && info "dry run: printing every step, changing nothing"
[ -n "$ROOT" ] && info "installing under the root $ROOT"

install_file "$SRC/bin/airlift" "$BIN_DIR/airlift" 0755

if [ -e "$ROOT$CONFIG" ]; then
    info "keeping the existing $ROOT$CONFIG (not rewritten; remove it to have install.sh write one for $FLAVOR)"
    # Still ours to remove at --uninstall if an earlier install.sh wrote it.
    if [ -f "$ROOT$MANIFEST" ] && grep -q " $CONFIG\$" "$ROOT$MANIFEST"; then
        KEEP_CONFIG_LINE="$(grep " $CONFIG\$" "$ROOT$MANIFEST" | head -n1)"
    fi
else
    {
        echo "# airlift serve's configuration, written by install.sh for a $FLAVOR node."
        echo "# Every key, with its default and meaning: $SHARE_DIR/config/airlift.toml"
        echo
        echo "# containerd's API socket."
        echo "address = \"$ADDRESS\""
        echo "namespace = \"k8s.io\""
        echo
        echo "# Archives (and .txt pull lists) dropped here are imported and pinned."
        echo "images_dirs = [\"$IMAGES_DIR\"]"
        echo
        echo "# containerd's registry hosts directory, through which pull lists are pulled."
        if [ -n "$HOSTS_DIR" ]; then
            echo "hosts_dir = \"$HOSTS_DIR\""
        else
            echo "# hosts_dir = \"/etc/containerd/certs.d\""
        fi
        echo
        echo "state_dir = \"$STATE_DIR\""
    } >"$WORK/config.toml"
    write_file "$CONFIG" 0644 <"$WORK/config.toml"
fi

# The documented example configuration, the units and the manifests, as the release has them.
(cd "$SRC/config" && find . -type f | sed 's:^\./::' | sort) >"$WORK/config-files"
while read -r f; do
    install_file "$SRC/config/$f" "$SHARE_DIR/config/$f" 0644
done <"$WORK/config-files"
# Kept so that `sh /usr/local/share/airlift/install.sh --uninstall` works once the tarball is gone.
if [ -f "$0" ]; then
    install_file "$0" "$SHARE_DIR/install.sh" 0755
fi

# Man pages and completions, wherever the release keeps them (paths without spaces: our own).
find "$SRC" -type f -name '*.1' | sort >"$WORK/man"
while read -r f; do
    install_file "$f" "/usr/local/share/man/man1/$(basename "$f")" 0644
done <"$WORK/man"
# first_file PATTERN...: the first file of the release matching find's test PATTERN.
first_file() { find "$SRC" -type f "$@" | sort | head -n1; }
f="$(first_file \( -name airlift.bash -o -path '*/bash*/airlift' \))"
[ -z "$f" ] || install_file "$f" /usr/local/share/bash-completion/completions/airlift 0644
f="$(first_file -name _airlift)"
[ -z "$f" ] || install_file "$f" /usr/local/share/zsh/site-functions/_airlift 0644
f="$(first_file -name airlift.fish)"
[ -z "$f" ] || install_file "$f" /usr/local/share/fish/vendor_completions.d/airlift.fish 0644

rebin "$SRC/config/airlift.service" >"$WORK/unit"
write_file "$SYSTEMD_DIR/airlift.service" 0644 <"$WORK/unit"

case "$FLAVOR" in
k3s | rke2)
    if [ "$FLAVOR" = k3s ]; then units="k3s.service k3s-agent.service"; else units="rke2-server.service rke2-agent.service"; fi
    present=""
    for u in $units; do unit_exists "$u" && present="$present $u"; done
    [ -n "$present" ] || present=" $units" # not installed yet: ready for either
    for u in $present; do
        rebin "$SRC/config/k3s-airlift.conf" >"$WORK/unit"
        write_file "$SYSTEMD_DIR/$u.d/airlift.conf" 0644 <"$WORK/unit"
    done
    ;;
containerd)
    if unit_exists kubelet.service; then
        rebin "$SRC/config/kubelet-airlift-wait.conf" >"$WORK/unit"
        write_file "$SYSTEMD_DIR/kubelet.service.d/airlift-wait.conf" 0644 <"$WORK/unit"
    else
        info "no kubelet.service: no kubelet drop-in (see $SHARE_DIR/config/kubelet-airlift-wait.conf)"
    fi
    ;;
esac

mkdir_p "$STATE_DIR"
[ "$FLAVOR" = containerd ] && mkdir_p "$IMAGES_DIR"

# The manifest: SHA256 and path of every file written (sha256sum's format).
if $DRY_RUN; then
    info "dry run: would record the installed files in $ROOT$MANIFEST"
else
    mkdir_p "$SHARE_DIR"
    {
        [ -n "${KEEP_CONFIG_LINE:-}" ] && echo "$KEEP_CONFIG_LINE"
        printf '%s' "$WRITTEN" | sort -u | while read -r path; do
            [ -n "$path" ] || continue
            case "$path" in "$MANIFEST") continue ;; esac
            printf '%s  %s\n' "$(sha256sum "$ROOT$path" | cut -d' ' -f1)" "$path"
        done
    } >"$ROOT$MANIFEST.airlift-tmp"
    mv -f "$ROOT$MANIFEST.airlift-tmp" "$ROOT$MANIFEST"
    info "installed files listed in $ROOT$MANIFEST"
fi

# --- install: systemd ------------------------------------------------------------------------

systemctl_run daemon-reload
if is_true "${INSTALL_AIRLIFT_SKIP_ENABLE:-}"; then
    info "INSTALL_AIRLIFT_SKIP_ENABLE=true: airlift.service not enabled nor started"
else
    systemctl_run enable airlift.service
    if is_true "${INSTALL_AIRLIFT_SKIP_START:-}"; then
        info "INSTALL_AIRLIFT_SKIP_START=true: airlift.service not started"
    else
        systemctl_run restart airlift.service
    fi
fi
if $DRY_RUN; then
    info "dry run: nothing was changed"
else
    info "airlift installed for $FLAVOR: drop image archives into $IMAGES_DIR; 'airlift status' shows the daemon"
fi
