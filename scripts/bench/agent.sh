#!/usr/bin/env bash
# Issue 5 benchmarks against the real dockerd (bulkhead-bench docker): Docker `start` event ->
# rules committed over 100 starts beside `docker run`'s own time; a burst of 50 starts; idle CPU
# and RSS of the `bulkhead agent` process with 200 running containers. The agents program fresh
# network namespaces; every container and network made here is removed again.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/docker.sh
ensure_dockerd >&2
ensure_test_image >&2
bin=${BULKHEAD_BIN:-.build/release/bulkhead}
bench=${BULKHEAD_BENCH_BIN:-.build/release/bulkhead-bench}
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
# Safety net should the benchmark be killed: its containers and network are named bh-bench-PID-*.
cleanup() {
    ids=$(docker ps -aq --filter name=bh-bench- 2>/dev/null || true)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    nets=$(docker network ls -q --filter name=bh-bench- 2>/dev/null || true)
    [ -n "$nets" ] && docker network rm $nets >/dev/null 2>&1
    return 0
}
trap cleanup EXIT
"$bench" docker "$(realpath "$bin")" "$BULKHEAD_TEST_IMAGE"
