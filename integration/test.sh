#!/usr/bin/env bash
# airlift's whole test suite, from a fresh machine: installs what it needs (Debian packages,
# containerd 2.x and 1.7 into .cache/), checks formatting and lints, builds, and runs the unit
# and end-to-end tests against real containerd. Needs root (containerd runs as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash integration/provision.sh

if ! command -v cargo >/dev/null; then
    echo "test: cargo is not installed" >&2
    exit 1
fi

echo "== cargo fmt --check" >&2
cargo fmt --all --check
cargo fmt --all --check --manifest-path fuzz/Cargo.toml
# The crash points of the reliability tests are compiled into this (test) build only.
features=(--features airlift/failpoints)
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
echo "== cargo build" >&2
cargo build --workspace --locked "${features[@]}"
echo "== cargo test" >&2
# Build the test binaries first and write them out: linking them leaves gigabytes of dirty
# pages, and the first end-to-end tests would otherwise wait behind their writeback in every
# fsync (containerd fsyncs its database while it starts).
cargo test --workspace --locked "${features[@]}" --no-run
sync
# The release artefacts (dist.sh: the static binary's tarball with install.sh, the .deb, the
# container image, SHA256SUMS) are built meanwhile, at idle CPU and I/O priority: the end-to-end
# tests spend most of their time waiting on containerd, and the static release build (4-5
# minutes of both cores alone; cargo-deb is installed when missing, about a minute) fills the
# gaps instead of adding to the run. Its lock is target/x86_64-unknown-linux-gnu/release, not
# the tests' target/debug.
# The fuzz targets' build (cargo-fuzz, release with sanitizers, about 10 minutes of both cores)
# likewise; they run after the tests.
echo "== integration/dist.sh and fuzz/run.sh --build-only (in the background, logs in target/)" >&2
mkdir -p target
nice -n 19 ionice -c 3 bash integration/dist.sh >target/dist.log 2>&1 &
dist_pid=$!
nice -n 19 ionice -c 3 bash fuzz/run.sh --build-only >target/fuzz-build.log 2>&1 &
fuzz_pid=$!
tests=0
cargo test --workspace --locked "${features[@]}" "$@" || tests=$?
# background PID LOG WHAT: waits for a background job; its log's end when it failed.
background() {
    local rc=0
    wait "$1" || rc=$?
    if ((rc)); then
        tail -n 40 "$2" >&2
        echo "test: $3 failed (exit $rc)" >&2
    fi
    return "$rc"
}
built=0
background "$dist_pid" target/dist.log integration/dist.sh || built=1
background "$fuzz_pid" target/fuzz-build.log "fuzz/run.sh --build-only" || built=1
((tests == 0 && built == 0)) || exit 1
# Their cheap checks (dist-check.sh: static, runs in an empty root, contents, install.sh from
# dist/ into a scratch root and out again, `dpkg --root` install and removal).
# integration/deb-test.sh (debootstrapped roots) is not run here.
echo "== integration/dist-check.sh" >&2
bash integration/dist-check.sh
static="$PWD/target/x86_64-unknown-linux-gnu/release/airlift"
# Installation: install.sh into temporary k3s, rke2 and containerd roots with the static binary
# (whose `airlift serve` must take every config install.sh writes) and systemd-analyze verify of
# every unit and drop-in (3 s of CPU; 5-20 s on a loaded 2-core machine); the Kubernetes
# manifests validated offline (2.5 s of CPU; the first run installs kubernetes-validate into
# .cache, about 30 s).
echo "== integration/install-test.sh" >&2
bash integration/install-test.sh "$static"
echo "== integration/manifests-test.sh" >&2
bash integration/manifests-test.sh
# The container image run as the DaemonSet runs it (14 s: 12 s of it building the image twice):
# imported by airlift into a throwaway containerd, run with ctr and the DaemonSet's mounts.
echo "== integration/image-test.sh" >&2
bash integration/image-test.sh "$static"
# A brief run of every fuzz target (the long runs of RELIABILITY.md: fuzz/run.sh 360); saved
# reproducers are replayed by the cargo test above.
echo "== fuzz/run.sh ${FUZZ_SECONDS:-10}" >&2
bash fuzz/run.sh "${FUZZ_SECONDS:-10}"
