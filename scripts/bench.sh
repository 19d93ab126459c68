#!/usr/bin/env bash
# Speed and memory benchmarks, each beside the alternative measured in the same run.
# Writes bench-results.json (one object per measurement) and prints a table. Needs root for the
# kernel benchmarks, which run in network namespaces they create and remove.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
install_packages

echo "==> swift build -c release"
swift build -c release 2>&1 | tail -1
export BULKHEAD_BIN="$PWD/.build/release/bulkhead"
export BULKHEAD_BENCH_BIN="$PWD/.build/release/bulkhead-bench"

lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for bench in scripts/bench/*.sh; do
    echo "==> $bench"
    bash "$bench" | tee -a "$lines"
done

python3 - "$lines" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
json.dump(rows, open("bench-results.json", "w"), indent=2)
print()
print(f"{'benchmark':<44} {'result':<58} target")
for r in rows:
    keys = [k for k in r if k not in ("bench", "target")]
    result = ", ".join(f"{k}={r[k]}" for k in keys)
    print(f"{r['bench']:<44} {result:<58} {r.get('target', '')}")
print("\nwritten: bench-results.json")
PY
