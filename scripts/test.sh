#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, then runs the unit, kernel (network namespaces)
# and end-to-end tests. As root in CI (CI=true) no kernel or Docker test may skip: each fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
source scripts/lib/docker.sh

if [ "${CI:-}" = "true" ] && [ "$(id -u)" -ne 0 ]; then
    echo "error: CI runs the kernel and Docker tests, which need root" >&2
    exit 1
fi

install_packages
# The Docker tests need dockerd and the busybox image: in CI their absence fails the run.
if ! { ensure_dockerd && ensure_test_image; }; then
    [ "${CI:-}" = "true" ] && exit 1
    echo "warning: no dockerd: the Docker tests will skip" >&2
fi

logs=$(mktemp -d /tmp/bulkhead-test.XXXXXX)

echo "==> swift build --build-tests"
status=0
swift build --build-tests > "$logs/build.log" 2>&1 || status=$?
grep -Ev '^\[[0-9]+/[0-9]+\] ' "$logs/build.log" | grep -Ev '^(Fetching|Fetched|Cloning|Computing|Computed|Creating working copy|Working copy)' || true
if [ "$status" -ne 0 ]; then
    echo "error: the build failed (full log: $logs/build.log)" >&2
    exit "$status"
fi

# Three runs, so that nothing starves or breaks its neighbours:
# 1. everything else, in parallel (kernel, lab, enforcement, unit tests);
# 2. the suites that drive async work on Swift's cooperative pool (2 threads here) — the Docker
#    client and the in-process agent — which the blocking lab tests would starve;
# 3. the agent against the real dockerd alone: it stops and restarts the shared dockerd.
run_tests() {  # name, swift test arguments…
    local name=$1
    shift
    echo "==> swift test $*"
    local rc=0
    swift test --skip-build "$@" > "$logs/$name.log" 2>&1 || rc=$?
    grep -Ev '(^◇ Test .* started|^Test Case .* started|^Test Suite .* started)' "$logs/$name.log" || true
    return "$rc"
}

status=0
run_tests main --skip BulkheadAgentDockerTests --skip BulkheadAgentTests --skip BulkheadDockerTests || status=$?
run_tests async --filter BulkheadAgentTests --filter BulkheadDockerTests || status=$?
run_tests dockerd --filter BulkheadAgentDockerTests || status=$?

# 4. the fuzzers, a short run each (FUZZ_SECONDS, default 15) from the committed seeds: a crash fails
#    the run. Their build has its own scratch path (.build-fuzz) and sanitizers.
fuzz_status=0
echo "==> scripts/fuzz.sh ${FUZZ_SECONDS:-15}"
scripts/fuzz.sh "${FUZZ_SECONDS:-15}" || fuzz_status=$?
[ "$fuzz_status" -eq 0 ] || status=$fuzz_status

# A plain closing line: Swift Testing's summaries, restated as "N passed, N failed, N skipped"; it fails
# the run on a skip in CI, on a run that died before its summary, and on a run of no test.
summary_status=0
scripts/lib/test-summary.sh "$logs/main.log" "$logs/async.log" "$logs/dockerd.log" || summary_status=$?
[ "$fuzz_status" -eq 0 ] || echo "error: a fuzzer crashed" >&2
[ "$summary_status" -eq 0 ] || status=$summary_status
exit "$status"
