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

# Installation: install.sh into temporary roots and systemd-analyze verify of every unit and
# drop-in of config/ (3 s of CPU; 5-20 s on a loaded 2-core machine), the Kubernetes manifests
# validated offline (2.5 s of CPU, 5-12 s; the first run installs kubernetes-validate into .cache,
# about 30 s).
# With the static binary (when built), the configs install.sh writes are also run by airlift serve.
echo "== integration/install-test.sh" >&2
static="$PWD/target/x86_64-unknown-linux-gnu/release/airlift"
if [[ -x "$static" ]]; then bash integration/install-test.sh "$static"; else bash integration/install-test.sh; fi
echo "== integration/manifests-test.sh" >&2
bash integration/manifests-test.sh

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
cargo test --workspace --locked "${features[@]}" "$@"
# A brief run of every fuzz target (the long runs of RELIABILITY.md: fuzz/run.sh 360); saved
# reproducers are replayed by the cargo test above.
echo "== fuzz/run.sh ${FUZZ_SECONDS:-10}" >&2
bash fuzz/run.sh "${FUZZ_SECONDS:-10}"
# The container image run as the DaemonSet runs it (14 s: 12 s of it building the image twice),
# with the static binary when one was built (dist.sh builds
# target/x86_64-unknown-linux-gnu/release/airlift); it says SKIP otherwise.
echo "== integration/image-test.sh" >&2
bash integration/image-test.sh
