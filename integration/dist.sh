#!/usr/bin/env bash
# Every release artefact of airlift into dist/, from the checked-out commit:
#
#   dist/airlift-<version>-linux-amd64.tar.gz   bin/airlift (static, x86_64-unknown-linux-gnu),
#                                               config/ (units, drop-ins, example configs),
#                                               man/man1/*.1, completions/ (bash, zsh, fish),
#                                               install.sh, README.md
#   dist/install.sh                             the installer, beside the tarball it installs
#   dist/airlift_<version>-1_amd64.deb          the same binary, units, config, man pages and
#                                               completions as a Debian package (cargo-deb;
#                                               [package.metadata.deb] in plugin/Cargo.toml)
#   dist/airlift-<version>-image.oci.tar        the container image (integration/image.sh)
#   dist/SHA256SUMS
#
# Reproducible where the tools allow: SOURCE_DATE_EPOCH is the commit's time, paths in the
# binary are remapped (--remap-path-prefix), the tarball's entries are sorted with fixed times,
# owners and modes, gzip writes no name or time. Same commit, same toolchain: same bytes.
#
# Usage: bash integration/dist.sh [--check]
#   --check   then run integration/dist-check.sh (static binary, tarball and .deb contents).
# The binary is built with `cargo build --locked --release --target x86_64-unknown-linux-gnu`
# in the usual target dir ($CARGO_TARGET_DIR or target/; its own subdirectory,
# target/x86_64-unknown-linux-gnu/release). cargo-deb is installed with
# `cargo install cargo-deb --locked` when it is missing; DIST_NO_DEB=1 skips the .deb.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

log() { printf 'dist: %s\n' "$*" >&2; }

check=0
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        *) echo "usage: $0 [--check]" >&2; exit 2 ;;
    esac
done

triple=x86_64-unknown-linux-gnu
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
name="airlift-$version-linux-amd64"
if commit="$(git rev-parse --short=12 HEAD 2>/dev/null)"; then
    : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct HEAD)}"
else
    # Not a git checkout: the build script takes the commit from the environment.
    commit="${AIRLIFT_COMMIT:-unknown}"
    export AIRLIFT_COMMIT="$commit"
    : "${SOURCE_DATE_EPOCH:=0}"
fi
export SOURCE_DATE_EPOCH
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"

# Static (glibc linked in), and no path of this machine in the binary.
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$repo=/airlift --remap-path-prefix=$target_dir=/airlift/target --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup"
log "building airlift $version ($commit), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
start=$SECONDS
cargo build --locked --release --target "$triple" -p airlift --bin airlift
log "release build: $((SECONDS - start))s"
bin="$target_dir/$triple/release/airlift"

rm -rf dist
stage="dist/stage/$name"
mkdir -p "$stage/bin" "$stage/config" "$stage/man/man1" "$stage/completions"
install -m 0755 "$bin" "$stage/bin/airlift"
# config/'s files, not its subdirectories (config/kubernetes/ is for kubectl, not a node).
find config -maxdepth 1 -type f -exec install -m 0644 {} "$stage/config/" \;
"$bin" generate man "$stage/man/man1"
for shell in bash zsh fish; do
    "$bin" generate completions "$shell" "$stage/completions"
done
install -m 0644 README.md "$stage/README.md"
install -m 0755 install.sh "$stage/install.sh"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f ! -path '*/bin/*' -exec chmod 0644 {} +

tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --format=gnu -C dist/stage -cf - "$name" | gzip -9n >"dist/$name.tar.gz"
log "dist/$name.tar.gz"

if [[ "${DIST_NO_DEB:-0}" != 1 ]]; then
    # What the .deb takes from dist/stage (the paths of [package.metadata.deb]): man pages
    # compressed as Debian wants them, the units and drop-ins naming /usr/bin/airlift.
    deb="dist/stage/deb"
    mkdir -p "$deb/man" "$deb/systemd" "$deb/share"
    for page in "$stage"/man/man1/*.1; do
        gz="$deb/man/${page##*/}.gz"
        gzip -9n <"$page" >"$gz"
    done
    for unit in airlift.service airlift-content-proxy.service; do
        sed 's|/usr/local/bin/airlift|/usr/bin/airlift|g' "config/$unit" >"$deb/systemd/$unit"
    done
    # The packaged config is for a plain containerd node (/usr/share/airlift/k3s-airlift.conf
    # and the example's comments say what k3s and rke2 change): the images directory the
    # package makes, not k3s's.
    sed 's|^images_dirs = \["/var/lib/rancher/k3s/agent/images"\]$|images_dirs = ["/var/lib/airlift/images"]   # k3s: ["/var/lib/rancher/k3s/agent/images"]|' \
        config/airlift.toml >"$deb/config.toml"
    grep -q '^images_dirs = \["/var/lib/airlift/images"\]' "$deb/config.toml" ||
        { echo "dist: config/airlift.toml's images_dirs line changed: update dist.sh" >&2; exit 1; }
    for dropin in k3s-airlift.conf kubelet-airlift-wait.conf; do
        sed 's|/usr/local/bin/airlift|/usr/bin/airlift|g' "config/$dropin" >"$deb/share/$dropin"
    done
    cp -r "$stage/completions" dist/stage/airlift-completions
    if ! cargo deb --version >/dev/null 2>&1; then
        log "installing cargo-deb (cargo install cargo-deb --locked)"
        # Without the release build's RUSTFLAGS: with crt-static and no --target, cargo cannot
        # build the proc-macros cargo-deb depends on.
        env -u RUSTFLAGS cargo install cargo-deb --locked
    fi
    cargo deb --no-build --no-strip --target "$triple" -p airlift --output dist/ >/dev/null
    log "$(find dist -maxdepth 1 -name '*.deb')"
fi

rm -rf dist/stage
install -m 0755 install.sh dist/install.sh
bash integration/image.sh "$bin" dist

(cd dist && sha256sum -- * >SHA256SUMS)
cat dist/SHA256SUMS >&2

if ((check)); then
    bash integration/dist-check.sh
fi
