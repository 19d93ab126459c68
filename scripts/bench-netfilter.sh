#!/usr/bin/env bash
# Netlink benchmarks (issue 3): JSON lines on stdout, for scripts/bench.sh to merge into
# bench-results.json. Needs root: every measurement runs in fresh network namespaces
# (bh-nf-bench-*) that the benchmark deletes again; the host ruleset is never touched.
#
#   scripts/bench-netfilter.sh            build (release) and run
#   BULKHEAD_BENCH_BIN=path scripts/bench-netfilter.sh   use an already built binary (bench.sh)
#
# (a) commit 100,000 `ipv4_addr . ipv4_addr . inet_service` elements in one transaction:
#     wall time and peak RSS of a child process, vs `nft -f` of the same content;
# (b) add / remove one element in that 100k set, 400 operations: median and p99 of send -> ack
#     (and of the whole apply());
# (c) dump the 100k table into the model, vs `nft -j list table`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-netfilter.sh: needs root (network namespaces, CAP_NET_ADMIN)" >&2
    exit 1
fi
bin="${BULKHEAD_BENCH_BIN:-}"
if [[ -z "$bin" ]]; then
    scratch="${BENCH_SCRATCH:-.build-nf-release}"
    swift build -c release --scratch-path "$scratch" --product bulkhead-bench >&2
    bin="$scratch/release/bulkhead-bench"
fi
exec "$bin" netfilter
