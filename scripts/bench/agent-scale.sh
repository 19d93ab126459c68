#!/usr/bin/env bash
# Issue 10 item 8, the agent at scale (bulkhead-bench agent-scale): the agent with a generated
# source of 10,000 containers of 1,000 services (100 policy files) programs a fresh network
# namespace; event -> commit over 200 adds and removes, CPU of a resync that finds nothing changed,
# idle CPU over 20 s and peak RSS. No dockerd: scripts/bench/agent.sh keeps the real-dockerd ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=${BULKHEAD_BENCH_BIN:-.build/release/bulkhead-bench}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The agent's log goes to a file: shown only when the benchmark fails.
if ! "$bench" agent-scale "${BULKHEAD_SCALE_EVENTS:-200}" "${BULKHEAD_SCALE_SEED:-10}" 2>"$log"; then
    tail -n 30 "$log" >&2
    exit 1
fi
