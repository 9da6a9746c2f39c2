#!/usr/bin/env bash
# Tests of install.sh and of the systemd units shipped in config/, in seconds and without root
# privileges beyond writing temp directories: install.sh runs into temporary roots
# (INSTALL_AIRLIFT_ROOT) laid out like a k3s node, an rke2 node and a plain containerd + kubelet
# node, from a release tarball of dist.sh's layout made here (bin/airlift, config/, a man page,
# completions); then `systemd-analyze verify --root` checks every unit and drop-in of config/
# and those install.sh wrote, and fails on any warning.
#
#   bash integration/install-test.sh [BINARY]   # the binary in the tarball; default: a stub (install.sh
#                                               # never runs it); a real one also checks that
#                                               # `airlift serve` takes the configs written
#
# Needs systemd-analyze (Debian's systemd) and sha256sum; shellcheck when installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
    printf 'install-test: FAIL: %s\n' "$*" >&2
    exit 1
}
ok() { printf 'install-test: ok: %s\n' "$*" >&2; }

tmp="$(mktemp -d)"
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$tmp"' EXIT

# --- the release tarball -----------------------------------------------------------------------
bin="${1:-}"
rel="$tmp/release/airlift-0.0.0-test-linux-amd64"
mkdir -p "$rel/bin" "$rel/share/man/man1" "$rel/share/completions"
if [[ -n "$bin" ]]; then
    cp "$bin" "$rel/bin/airlift"
else
    printf '#!/bin/sh\necho airlift stub\n' >"$rel/bin/airlift"
    chmod 0755 "$rel/bin/airlift"
fi
cp -r config "$rel/config"
echo '.TH AIRLIFT 1' >"$rel/share/man/man1/airlift.1"
echo '.TH AIRLIFT-SERVE 1' >"$rel/share/man/man1/airlift-serve.1"
echo 'complete -F _airlift airlift' >"$rel/share/completions/airlift.bash"
echo '#compdef airlift' >"$rel/share/completions/_airlift"
echo 'complete -c airlift' >"$rel/share/completions/airlift.fish"
tarball="$tmp/release/airlift-0.0.0-test-linux-amd64.tar.gz"
tar -C "$tmp/release" -czf "$tarball" airlift-0.0.0-test-linux-amd64
(cd "$tmp/release" && sha256sum airlift-0.0.0-test-linux-amd64.tar.gz >SHA256SUMS)
rm -rf "$rel"
cp install.sh "$tmp/release/install.sh"

if command -v shellcheck >/dev/null; then
    shellcheck -x install.sh integration/*.sh
    ok "shellcheck install.sh integration/*.sh"
fi

# snapshot ROOT: every path with its type, mode and content hash.
snapshot() {
    (cd "$1" && find . -printf '%p %y %m\n' | sort && find . -type f -exec sha256sum {} + | sort)
}

# inst ROOT ARGS...: install.sh from the release directory into ROOT; output in $tmp/out.
inst() {
    local root="$1"
    shift
    INSTALL_AIRLIFT_ROOT="$root" sh "$tmp/release/install.sh" "$@" >"$tmp/out" 2>&1 ||
        { cat "$tmp/out" >&2; fail "install.sh $* into $root exited $?"; }
}
has() { grep -qF -- "$2" "$1" || fail "$1 lacks: $2"; }
lacks() { ! grep -qF -- "$2" "$1" || fail "$1 has: $2"; }
exists() { for f in "$@"; do [[ -e "$f" ]] || fail "missing $f"; done; }
gone() { for f in "$@"; do [[ ! -e "$f" ]] || fail "still there: $f"; done; }

# accepted CFG: when a real binary was given, `airlift serve` takes the config install.sh wrote
# (it gets as far as waiting for containerd, which is absent; an unknown key or bad value would
# stop it at once).
accepted() {
    [[ -n "$bin" ]] || return 0
    sed "s|\"/var/lib/airlift|\"$tmp/state-check|" "$1" >"$tmp/check.toml"
    timeout 2 "$bin" serve --config "$tmp/check.toml" --socket "$tmp/check.sock" >"$tmp/serve" 2>&1 || true
    grep -q 'waiting for containerd' "$tmp/serve" || { cat "$tmp/serve" >&2; fail "airlift serve refused $1"; }
    rm -rf "$tmp/state-check" "$tmp/check.sock"
}

stub_unit() {
    mkdir -p "$(dirname "$1")"
    printf '[Unit]\nDescription=stub\n[Service]\nExecStart=/usr/bin/true\n[Install]\nWantedBy=multi-user.target\n' >"$1"
}

# A root systemd-analyze can load units in: systemd's own units (targets) and /usr/bin/true.
systemd_root() {
    mkdir -p "$1/usr/lib/systemd" "$1/usr/bin" "$1/usr/local/bin"
    cp -a /usr/lib/systemd/system "$1/usr/lib/systemd/"
    [[ -e "$1/lib" ]] || ln -s usr/lib "$1/lib"
    [[ -e "$1/bin" ]] || ln -s usr/bin "$1/bin"
    cp /usr/bin/true "$1/usr/bin/true"
}

# verify ROOT UNIT...: systemd-analyze verify in ROOT; any message is a failure.
verify() {
    local root="$1" out rc=0
    shift
    out="$(systemd-analyze verify --man=no --root="$root" "$@" 2>&1)" || rc=$?
    if ((rc)) || [[ -n "$out" ]]; then
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify $* (in $root) exited $rc"
    fi
}

# --- k3s -----------------------------------------------------------------------------------------
r="$tmp/k3s"
mkdir -p "$r/var/lib/rancher/k3s/agent" "$r/run/k3s/containerd"
stub_unit "$r/etc/systemd/system/k3s.service"
before="$(snapshot "$r")"
inst "$r" --dry-run
[[ "$(snapshot "$r")" == "$before" ]] || fail "k3s: --dry-run changed the root"
has "$tmp/out" "would install"
has "$tmp/out" "downloads nothing"
has "$tmp/out" 'address = "/run/k3s/containerd/containerd.sock"'
INSTALL_AIRLIFT_DRY_RUN=true inst "$r"
[[ "$(snapshot "$r")" == "$before" ]] || fail "k3s: INSTALL_AIRLIFT_DRY_RUN=true changed the root"
ok "k3s: dry run prints every step and changes nothing"

inst "$r"
has "$tmp/out" "found k3s"
has "$tmp/out" "not running systemctl daemon-reload"
cfg="$r/etc/airlift/config.toml"
has "$cfg" 'address = "/run/k3s/containerd/containerd.sock"'
has "$cfg" 'images_dirs = ["/var/lib/rancher/k3s/agent/images"]'
has "$cfg" 'hosts_dir = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"'
has "$cfg" 'namespace = "k8s.io"'
has "$cfg" 'state_dir = "/var/lib/airlift"'
accepted "$cfg"
exists "$r/usr/local/bin/airlift" "$r/etc/systemd/system/airlift.service" \
    "$r/etc/systemd/system/k3s.service.d/airlift.conf" \
    "$r/usr/local/share/airlift/config/airlift.toml" "$r/usr/local/share/airlift/install.sh" \
    "$r/usr/local/share/airlift/config/kubernetes/k3s/airlift.yaml" \
    "$r/usr/local/share/airlift/install.files" "$r/usr/local/share/man/man1/airlift-serve.1" \
    "$r/usr/local/share/bash-completion/completions/airlift" \
    "$r/usr/local/share/zsh/site-functions/_airlift" \
    "$r/usr/local/share/fish/vendor_completions.d/airlift.fish" "$r/var/lib/airlift"
[[ -x "$r/usr/local/bin/airlift" ]] || fail "k3s: the binary is not executable"
cmp -s config/airlift.service "$r/etc/systemd/system/airlift.service" || fail "k3s: airlift.service differs from config/"
cmp -s config/k3s-airlift.conf "$r/etc/systemd/system/k3s.service.d/airlift.conf" || fail "k3s: the drop-in differs"
gone "$r/etc/systemd/system/k3s-agent.service.d" "$r/etc/systemd/system/kubelet.service.d"
(cd "$r" && sed 's:  /:  ./:' usr/local/share/airlift/install.files | sha256sum -c --quiet -) ||
    fail "k3s: the manifest does not match the files"
ok "k3s: config, binary, unit, k3s drop-in, man pages, completions and manifest in place"

# Units as installed: systemd-analyze in this root.
systemd_root "$r"
verify "$r" /etc/systemd/system/airlift.service /etc/systemd/system/k3s.service
ok "k3s: systemd-analyze verify of the installed units"

# A second run keeps a config the operator changed.
echo 'concurrency = 4' >>"$cfg"
inst "$r" --dry-run
has "$tmp/out" "keeping the existing"
inst "$r"
has "$tmp/out" "keeping the existing"
has "$cfg" 'concurrency = 4'
ok "k3s: an existing config.toml is kept"

touch "$r/var/lib/airlift/record"
before="$(snapshot "$r")"
inst "$r" --uninstall --dry-run
[[ "$(snapshot "$r")" == "$before" ]] || fail "k3s: --uninstall --dry-run changed the root"
inst "$r" --uninstall
gone "$r/usr/local/bin/airlift" "$r/etc/systemd/system/airlift.service" \
    "$r/etc/systemd/system/k3s.service.d" "$r/usr/local/share/airlift" \
    "$r/usr/local/share/man/man1/airlift.1" "$r/usr/local/share/bash-completion/completions/airlift"
exists "$r/var/lib/airlift/record" "$r/etc/systemd/system/k3s.service"
has "$tmp/out" "keeping the state directory"
exists "$cfg" # changed by the operator: kept
has "$tmp/out" "changed since install.sh wrote it"
inst "$r" --uninstall --purge
gone "$r/var/lib/airlift" "$r/etc/airlift"
ok "k3s: --uninstall removes what was installed and keeps the state and a changed config; --purge removes them"

# --- rke2 (detected before k3s: it serves containerd on /run/k3s too) -----------------------------
r="$tmp/rke2"
mkdir -p "$r/var/lib/rancher/rke2"
stub_unit "$r/usr/lib/systemd/system/rke2-server.service"
inst "$r" --dry-run
has "$tmp/out" "found rke2"
INSTALL_AIRLIFT_SKIP_ENABLE=true inst "$r"
has "$r/etc/airlift/config.toml" 'images_dirs = ["/var/lib/rancher/rke2/agent/images"]'
has "$r/etc/airlift/config.toml" 'hosts_dir = "/var/lib/rancher/rke2/agent/etc/containerd/certs.d"'
has "$r/etc/airlift/config.toml" 'address = "/run/k3s/containerd/containerd.sock"'
exists "$r/etc/systemd/system/rke2-server.service.d/airlift.conf"
gone "$r/etc/systemd/system/rke2-agent.service.d"
inst "$r" --uninstall
gone "$r/etc/airlift" "$r/etc/systemd/system/rke2-server.service.d" "$r/usr/local/bin/airlift"
ok "rke2: detected, configured, uninstalled"

# --- plain containerd + kubelet, binary in /usr/bin -----------------------------------------------
r="$tmp/containerd"
mkdir -p "$r/run/containerd" "$r/var/lib/containerd"
stub_unit "$r/usr/lib/systemd/system/kubelet.service"
stub_unit "$r/usr/lib/systemd/system/containerd.service"
before="$(snapshot "$r")"
inst "$r" --dry-run
[[ "$(snapshot "$r")" == "$before" ]] || fail "containerd: --dry-run changed the root"
INSTALL_AIRLIFT_BIN_DIR=/usr/bin inst "$r"
has "$tmp/out" "found neither k3s, rke2 nor containerd's socket" # no socket in the temp root
cfg="$r/etc/airlift/config.toml"
has "$cfg" 'address = "/run/containerd/containerd.sock"'
has "$cfg" 'images_dirs = ["/var/lib/airlift/images"]'
has "$cfg" '# hosts_dir = "/etc/containerd/certs.d"'
lacks "$cfg" 'rancher'
accepted "$cfg"
exists "$r/usr/bin/airlift" "$r/etc/systemd/system/kubelet.service.d/airlift-wait.conf" "$r/var/lib/airlift/images"
gone "$r/usr/local/bin/airlift" "$r/etc/systemd/system/k3s.service.d"
has "$r/etc/systemd/system/airlift.service" "ExecStart=/usr/bin/airlift serve"
has "$r/etc/systemd/system/kubelet.service.d/airlift-wait.conf" "ExecStartPre=/usr/bin/airlift wait"
lacks "$r/etc/systemd/system/airlift.service" "/usr/local/bin"
systemd_root "$r"
verify "$r" /etc/systemd/system/airlift.service /usr/lib/systemd/system/kubelet.service
ok "containerd: config, unit and kubelet drop-in (binary in /usr/bin) installed and verified"
inst "$r" --uninstall
gone "$r/usr/bin/airlift" "$r/etc/systemd/system/airlift.service" "$r/etc/systemd/system/kubelet.service.d" "$r/etc/airlift"
exists "$r/var/lib/airlift/images" "$r/usr/lib/systemd/system/kubelet.service"
INSTALL_AIRLIFT_PURGE=true inst "$r" --uninstall
gone "$r/var/lib/airlift"
ok "containerd: --uninstall keeps /var/lib/airlift, INSTALL_AIRLIFT_PURGE=true removes it"

# --- refusals ---------------------------------------------------------------------------------
mkdir -p "$tmp/empty" "$tmp/bare"
cp install.sh "$tmp/bare/install.sh"
if INSTALL_AIRLIFT_ROOT="$tmp/empty" sh "$tmp/bare/install.sh" >"$tmp/out" 2>&1; then
    fail "install.sh without a tarball succeeded"
fi
has "$tmp/out" "downloads nothing"
if INSTALL_AIRLIFT_ROOT="$tmp/empty" INSTALL_AIRLIFT_FLAVOR=k8s sh "$tmp/release/install.sh" >"$tmp/out" 2>&1; then
    fail "INSTALL_AIRLIFT_FLAVOR=k8s was accepted"
fi
echo "0000000000000000000000000000000000000000000000000000000000000000  airlift-0.0.0-test-linux-amd64.tar.gz" >"$tmp/release/SHA256SUMS"
if INSTALL_AIRLIFT_ROOT="$tmp/empty" sh "$tmp/release/install.sh" >"$tmp/out" 2>&1; then
    fail "a tarball not matching SHA256SUMS was installed"
fi
[[ -z "$(ls -A "$tmp/empty")" ]] || fail "a refused install wrote into the root"
ok "refused: no tarball, an unknown flavor, a tarball not matching SHA256SUMS"

# --- every unit and drop-in shipped in config/ ---------------------------------------------------
# Placed as an operator would (the units in /etc/systemd/system, the drop-ins under the units they
# extend, stubs for containerd, kubelet and k3s), with /usr/local/bin/airlift present.
r="$tmp/units"
systemd_root "$r"
cp "$tmp/release/install.sh" "$r/usr/local/bin/airlift" # any executable
u="$r/etc/systemd/system"
mkdir -p "$u/kubelet.service.d" "$u/k3s.service.d" "$u/k3s-agent.service.d"
for f in config/*.service; do cp "$f" "$u/"; done
cp config/kubelet-airlift-wait.conf "$u/kubelet.service.d/airlift-wait.conf"
cp config/k3s-airlift.conf "$u/k3s.service.d/airlift.conf"
cp config/k3s-airlift.conf "$u/k3s-agent.service.d/airlift.conf"
for s in containerd kubelet k3s k3s-agent; do stub_unit "$u/$s.service"; done
units=()
for f in config/*.service; do units+=("/etc/systemd/system/$(basename "$f")"); done
units+=(/etc/systemd/system/kubelet.service /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service)
verify "$r" "${units[@]}"
# The check can fail: a misspelt key in a copy of each unit and drop-in must be reported.
for f in "$u"/*.service "$u"/*.service.d/airlift*.conf; do
    case "$f" in */containerd.service | */kubelet.service | */k3s.service | */k3s-agent.service) continue ;; esac
    cp "$f" "$f.good"
    sed -i '0,/^After=\|^Wants=/s//Aftr=/' "$f"
    if systemd-analyze verify --man=no --root="$r" "${units[@]}" >/dev/null 2>"$tmp/err" && [[ ! -s "$tmp/err" ]]; then
        fail "systemd-analyze verify missed a misspelt key in $f"
    fi
    mv "$f.good" "$f"
done
verify "$r" "${units[@]}"
ok "systemd-analyze verify: every unit and drop-in of config/ (and a misspelt key in each is caught)"
echo "install-test: all passed" >&2
