#!/usr/bin/env bash
# Issue 3 benchmarks (netlink): 100k concatenated elements in one transaction vs `nft -f` and
# `iptables-restore` of the same triples as 100k rules; one element add/remove in a 100k set; dump
# of a 100k table vs `nft -j list table`. All in fresh network namespaces. See
# scripts/bench-netfilter.sh (also runnable on its own) and Sources/bulkhead-bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash scripts/bench-netfilter.sh
