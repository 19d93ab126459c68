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

echo "==> swift test"
status=0
swift test --skip-build > "$logs/test.log" 2>&1 || status=$?
# Show results, not the "started" chatter.
grep -Ev '(^◇ Test .* started|^Test Case .* started|^Test Suite .* started)' "$logs/test.log" || true

# A plain closing line: Swift Testing's summary, restated as "N passed, N failed".
total=$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .*/\1/p' "$logs/test.log" | tail -1)
failed_tests=$(grep -E '^✘ Test [^ ]+ .*failed after' "$logs/test.log" | wc -l)
if [ -n "$total" ]; then
    echo "tests: $((total - failed_tests)) passed, $failed_tests failed"
fi
exit "$status"
