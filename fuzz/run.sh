#!/usr/bin/env bash
# Runs airlift's fuzz targets (libFuzzer, through cargo-fuzz) for SECONDS each, default 60, then
# prints a table of what each did (executions, rate, corpus, crashes, peak memory) and the total.
# Exits non-zero if any target crashed, timed out or ran out of memory: the input that did it is
# in fuzz/artifacts/<target>/ (save it, minimised, in fuzz/regressions/<target>/, where
# `cargo test -p airlift --test fuzz_regressions` replays it).
#
#   fuzz/run.sh [SECONDS] [TARGET...]      e.g. fuzz/run.sh 600 archive
#   fuzz/run.sh --build-only                build the targets and stop (integration/test.sh builds
#                                           them beside the end-to-end tests, then runs them)
#   FUZZ_PROFILE=dev fuzz/run.sh 10 config  an unoptimised build (quicker to build, slower to run)
#
# Installs cargo-fuzz when it is missing. The sanitizer flags cargo-fuzz passes are unstable
# options: the stable toolchain accepts them with RUSTC_BOOTSTRAP=1. Each target starts from
# fuzz/seeds/<target>/ (the archive target also from the fixtures in integration/fixtures/) and
# keeps what it finds in fuzz/corpus/<target>/; logs go to fuzz/logs/ (the table to
# fuzz/logs/summary.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

build_only=0
if [ "${1:-}" = --build-only ]; then
    build_only=1
    shift
fi
seconds=${1:-60}
shift || true
all=(archive understand reference platform filters config proxy_write)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# The largest input each target is given.
max_len() {
    case $1 in
        archive) echo 65536 ;;
        understand) echo 65536 ;;
        reference) echo 512 ;;
        platform | filters) echo 2048 ;;
        config | proxy_write) echo 8192 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo install cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# FUZZ_PROFILE=dev builds without optimisations: a third of the build time, but the archive
# target runs a few inputs a second (its decoders unoptimised), too slow for its 10 s limit on
# large inputs: for trying a change to another target quickly, not for CI or long runs.
profile=${FUZZ_PROFILE:-release}
echo "== cargo fuzz build ($profile)" >&2
if [ "$profile" = dev ]; then
    cargo fuzz build --dev
    dir=debug
else
    cargo fuzz build
    dir=release
fi
bin=${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/$dir
[ "$build_only" = 0 ] || exit 0

# Smaller quarantine: freed memory is held back less, so the RSS limit measures airlift.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=64:detect_leaks=1}
# The one leak report that is not airlift's: glibc's record of a thread's thread-local
# destructors, still held by a decode thread that is exiting when the leak check runs.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/lsan.supp:print_suppressions=0}

mkdir -p logs
rows=()
total=0
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t" "seeds/$t" "regressions/$t")
    if [ "$t" = archive ] && [ -d ../integration/fixtures ]; then
        dirs+=(../integration/fixtures)
    fi
    before=$(find "artifacts/$t" -type f | wc -l)
    echo "== fuzzing $t for ${seconds}s" >&2
    rc=0
    "$bin/$t" "${dirs[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=4096 \
        -max_len="$(max_len "$t")" -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "logs/$t.log" | tail -1)
    runs=${runs:-0}
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "logs/$t.log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        echo "!! $t: exit $rc, $crashes new artifact(s) in fuzz/artifacts/$t/; see fuzz/logs/$t.log" >&2
    fi
    total=$((total + runs))
    rows+=("| $t | $seconds | $runs | ${rate:-?} | $corpus | $crashes | ${rss:-?} |")
done

{
    echo "| target | seconds | executions | executions/s | corpus (inputs) | crashes | peak RSS (MB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
    echo "| **total** | | **$total** | | | | |"
} | tee logs/summary.md
exit "$failed"
