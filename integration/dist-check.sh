#!/usr/bin/env bash
# Checks what integration/dist.sh put in dist/, cheaply enough for every CI run (seconds):
#
#   * the binary is static (`file`, `ldd`) and runs in a root holding nothing else: `chroot`
#     into a directory with only the binary, `airlift --version` (the version and commit) and
#     `airlift import --help`;
#   * the tarball holds bin/airlift, config/ (without config/kubernetes), a man page per
#     command, the completions, install.sh and README.md; SHA256SUMS matches and names the
#     tarball, the .deb, the image and install.sh;
#   * install.sh from dist/ (beside the tarball, as an operator carries them) into a scratch
#     root laid out as a plain containerd node: the binary, unit, config, man pages and
#     completions land and the binary runs there; --uninstall removes all of it;
#   * the .deb (when built): `dpkg-deb -I`/`-c` (fields, files, conffiles, maintainer scripts),
#     `systemd-analyze verify` of its units,
#     then `dpkg --root` into a scratch root holding only a shell and the coreutils its scripts
#     use: installed (the binary runs there, /var/lib/airlift made), `dpkg -r` (state kept,
#     conffiles kept), `dpkg -P` (both gone).
#
# Needs root (chroot). The full install into debootstrapped Debian roots is
# integration/deb-test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { printf 'dist-check: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'dist-check: ok: %s\n' "$*" >&2; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
name="airlift-$version-linux-amd64"
tarball="dist/$name.tar.gz"
[[ -f "$tarball" ]] || fail "$tarball missing: run integration/dist.sh first"
(cd dist && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match"
ok "SHA256SUMS"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# The tarball's contents.
tar -tzf "$tarball" >"$scratch/list"
for want in bin/airlift config/airlift.service config/airlift-content-proxy.service \
    config/airlift.toml config/k3s-airlift.conf config/kubelet-airlift-wait.conf \
    man/man1/airlift.1 man/man1/airlift-import.1 man/man1/airlift-serve.1 \
    man/man1/airlift-verify.1 completions/airlift.bash completions/_airlift \
    completions/airlift.fish install.sh README.md; do
    grep -qx "$name/$want" "$scratch/list" || fail "$tarball lacks $want"
done
! grep -q "^$name/config/kubernetes" "$scratch/list" || fail "$tarball holds config/kubernetes"
tar -tvzf "$tarball" | awk '$2 != "0/0" { exit 1 }' || fail "$tarball has entries not owned by 0/0"
ok "tarball contents ($(wc -l <"$scratch/list") entries)"

# Static, and alone in a root.
tar -xzf "$tarball" -C "$scratch"
bin="$scratch/$name/bin/airlift"
file -b "$bin" | tee "$scratch/file" >&2
grep -Eq 'statically linked|static-pie linked' "$scratch/file" || fail "file: not static"
if ldd "$bin" >"$scratch/ldd" 2>&1; then
    grep -Eq 'statically linked|not a dynamic executable' "$scratch/ldd" || fail "ldd: $(cat "$scratch/ldd")"
fi
ok "static: $(tr -d '\t\n' <"$scratch/ldd")"
root="$scratch/root"
mkdir -p "$root"
cp "$bin" "$root/airlift"
said="$(chroot "$root" /airlift --version)"
[[ "$said" =~ ^airlift\ $version\ \([0-9a-f]{12}\)$|^airlift\ $version\ \(unknown\)$ ]] ||
    fail "airlift --version said: $said"
chroot "$root" /airlift import --help | grep -q -- '--unpack' || fail "airlift import --help"
chroot "$root" /airlift generate man /man || fail "airlift generate man in the empty root"
[[ -s "$root/man/airlift-import.1" ]] || fail "airlift generate man wrote no airlift-import.1"
ok "runs in an empty root: $said"

# SHA256SUMS names every artefact.
for want in "$name.tar.gz" install.sh "airlift-$version-image.oci.tar"; do
    grep -q "  $want\$" dist/SHA256SUMS || fail "SHA256SUMS does not name $want"
done

# install.sh from dist/, into a root laid out as a plain containerd node (INSTALL_AIRLIFT_ROOT:
# systemctl is not run), then --uninstall.
node="$scratch/node"
mkdir -p "$node/run/containerd" "$node/etc/systemd/system"
INSTALL_AIRLIFT_ROOT="$node" sh dist/install.sh >"$scratch/install.log" 2>&1 || {
    cat "$scratch/install.log" >&2
    fail "dist/install.sh into a scratch root"
}
for want in usr/local/bin/airlift etc/systemd/system/airlift.service etc/airlift/config.toml \
    usr/local/share/man/man1/airlift-import.1 usr/local/share/bash-completion/completions/airlift \
    usr/local/share/airlift/install.files; do
    [[ -e "$node/$want" ]] || fail "dist/install.sh did not install /$want"
done
grep -q '^address = "/run/containerd/containerd.sock"' "$node/etc/airlift/config.toml" ||
    fail "dist/install.sh wrote no containerd address: $(cat "$node/etc/airlift/config.toml")"
cmp -s "$node/usr/local/bin/airlift" "$bin" || fail "the installed binary is not the tarball's"
"$node/usr/local/bin/airlift" --version >/dev/null || fail "the installed airlift does not run"
INSTALL_AIRLIFT_ROOT="$node" sh "$node/usr/local/share/airlift/install.sh" --uninstall \
    >"$scratch/install.log" 2>&1 || {
    cat "$scratch/install.log" >&2
    fail "install.sh --uninstall"
}
for gone in usr/local/bin/airlift etc/systemd/system/airlift.service \
    usr/local/share/man/man1/airlift-import.1; do
    [[ ! -e "$node/$gone" ]] || fail "install.sh --uninstall left /$gone"
done
ok "dist/install.sh: installed from the tarball beside it, then uninstalled"

deb="$(find dist -maxdepth 1 -name 'airlift_*.deb' | head -n1)"
if [[ -z "$deb" ]]; then
    echo "dist-check: no .deb in dist/ (DIST_NO_DEB=1?), not checked" >&2
    exit 0
fi

# The .deb's fields and files.
dpkg-deb -I "$deb" >"$scratch/info"
grep -q '^ Package: airlift$' "$scratch/info" || fail "$deb: Package"
grep -q '^ Architecture: amd64$' "$scratch/info" || fail "$deb: Architecture"
grep -q "^ Version: $version" "$scratch/info" || fail "$deb: Version"
! grep -q '^ Depends:.*libc' "$scratch/info" || fail "$deb depends on libc (not static?)"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$scratch/files"
for want in /usr/bin/airlift /lib/systemd/system/airlift.service \
    /lib/systemd/system/airlift-content-proxy.service /etc/airlift/config.toml \
    /etc/default/airlift /usr/share/airlift/k3s-airlift.conf \
    /usr/share/airlift/kubelet-airlift-wait.conf /usr/share/man/man1/airlift.1.gz \
    /usr/share/man/man1/airlift-import.1.gz /usr/share/bash-completion/completions/airlift \
    /usr/share/zsh/vendor-completions/_airlift /usr/share/fish/vendor_completions.d/airlift.fish; do
    grep -qx "$want" "$scratch/files" || fail "$deb lacks $want"
done
! grep -q '^/etc/systemd\|^/var/lib/airlift' "$scratch/files" ||
    fail "$deb enables a unit or owns the state directory"
dpkg-deb -e "$deb" "$scratch/control"
for conffile in /etc/airlift/config.toml /etc/default/airlift; do
    grep -qx "$conffile" "$scratch/control/conffiles" || fail "$conffile is not a conffile"
done
for script in postinst prerm postrm; do
    [[ -x "$scratch/control/$script" ]] || fail "$deb has no $script"
    sh -n "$scratch/control/$script" || fail "$script: syntax"
done
dpkg-deb -x "$deb" "$scratch/deb"
grep -q '^images_dirs = \["/var/lib/airlift/images"\]' "$scratch/deb/etc/airlift/config.toml" ||
    fail "the .deb's config.toml does not watch /var/lib/airlift/images"
grep -q '^address = "/run/containerd/containerd.sock"' "$scratch/deb/etc/airlift/config.toml" ||
    fail "the .deb's config.toml does not name containerd's socket"
grep -q '^ExecStart=/usr/bin/airlift serve' "$scratch/deb/lib/systemd/system/airlift.service" ||
    fail "airlift.service does not run /usr/bin/airlift"
ok "$deb: fields, $(wc -l <"$scratch/files") paths, conffiles, maintainer scripts"

# The .deb's units (their paths rewritten to /usr/bin/airlift) as systemd reads them: in the
# extracted package, beside systemd's own units; any message is a failure.
if command -v systemd-analyze >/dev/null; then
    u="$scratch/deb"
    mkdir -p "$u/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$u/usr/lib/systemd/"
    out="$(systemd-analyze verify --man=no --root="$u" \
        "$u/lib/systemd/system/airlift.service" "$u/lib/systemd/system/airlift-content-proxy.service" 2>&1)" ||
        fail "systemd-analyze verify of the .deb's units: $out"
    [[ -z "$out" ]] || fail "systemd-analyze verify of the .deb's units: $out"
    ok "systemd-analyze verify: the .deb's units"
fi

# dpkg --root into a scratch root: the maintainer scripts run chrooted there, so it holds a
# shell and the few programs they call, with their libraries.
r="$scratch/dpkg-root"
mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/tmp"
touch "$r/var/lib/dpkg/status"
for prog in /bin/sh /bin/mkdir /bin/chmod /bin/rm; do
    real="$(readlink -f "$prog")"
    for f in "$real" $(ldd "$real" 2>/dev/null | grep -o '/[^ ]*'); do
        mkdir -p "$r$(dirname "$f")"
        cp -L "$f" "$r$f"
    done
    mkdir -p "$r$(dirname "$prog")"
    [[ -e "$r$prog" ]] || cp -L "$real" "$r$prog"
done
dpkg_r() { dpkg --root="$r" --force-unsafe-io "$@" >"$scratch/dpkg.log" 2>&1 || {
    cat "$scratch/dpkg.log" >&2
    fail "dpkg --root $*"
}; }
dpkg_r -i "$deb"
[[ -d "$r/var/lib/airlift" ]] || fail "postinst did not make /var/lib/airlift"
[[ ! -e "$r/etc/systemd/system/multi-user.target.wants/airlift.service" ]] || fail "enabled on install"
chroot "$r" /usr/bin/airlift --version >/dev/null || fail "installed airlift does not run"
touch "$r/var/lib/airlift/kept"
dpkg_r -r airlift
[[ ! -e "$r/usr/bin/airlift" ]] || fail "dpkg -r left /usr/bin/airlift"
[[ -e "$r/var/lib/airlift/kept" ]] || fail "dpkg -r removed /var/lib/airlift"
[[ -e "$r/etc/airlift/config.toml" ]] || fail "dpkg -r removed the conffile"
dpkg_r -P airlift
[[ ! -e "$r/var/lib/airlift" ]] || fail "dpkg -P left /var/lib/airlift"
[[ ! -e "$r/etc/airlift/config.toml" ]] || fail "dpkg -P left /etc/airlift/config.toml"
ok "dpkg --root: install (nothing enabled), -r (state and config kept), -P (both gone)"
