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
# One benchmark failing (a missing tool, a kernel refusal) is reported and the others still run.
failed=()
for bench in scripts/bench/*.sh; do
    echo "==> $bench"
    rc=0
    bash "$bench" | tee -a "$lines" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "error: $bench failed (exit $rc); the other benchmarks go on" >&2
        failed+=("$bench")
        printf '{"bench":"%s","failed":true,"exit":%s}\n' "$bench" "$rc" >> "$lines"
    fi
done

# Each figure beside its target, met or missed. The targets live here, in one table, so a
# benchmark's JSON carries measurements only and the verdicts are computed the same way for all.
python3 - "$lines" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
json.dump(rows, open("bench-results.json", "w"), indent=2)

# (bench, impl) -> [(key, op, limit, what)]
TARGETS = {
    ("netfilter.commit_100k_concat", "ratio"): [("speedup", ">=", 3.0, "x faster than nft -f"), ("rss_fraction", "<=", 0.5, "of nft -f's peak RSS")],
    ("netfilter.element_op_in_100k_set", "bulkhead"): [("send_to_ack_median_ms", "<=", 1.0, "ms median send->ack")],
    ("netfilter.dump_100k", "bulkhead"): [("median_s", "<=", 0.5, "s median")],
    ("enforce.cold_apply", "bulkhead apply"): [("wall_s_median", "<=", 1.0, "s whole process"), ("peak_rss_mb", "<=", 150, "MB peak RSS")],
    ("enforce.shape_cold_apply", "bulkhead apply"): [("wall_s_median", "<=", 1.0, "s whole process"), ("peak_rss_mb", "<=", 150, "MB peak RSS")],
    ("enforce.shape_plan", "bulkhead plan (no table)"): [("wall_s", "<=", 0.3, "s whole process")],
    ("enforce.container_added", "bulkhead incremental"): [("median_ms", "<=", 1.0, "ms median change->ack"), ("p99_ms", "<=", 3.0, "ms p99")],
    ("enforce.tcp_connections_per_s", "bulkhead"): [("fraction_of_no_ruleset", ">=", 0.9, "of no ruleset's new TCP connections/s")],
    ("agent.start_to_commit", "bulkhead agent"): [("connect_to_commit_median_ms", "<=", 5.0, "ms median event->commit"), ("connect_to_commit_p99_ms", "<=", 20.0, "ms p99")],
    ("agent.burst_50_starts", "bulkhead agent"): [("converged_after_last_start_ms", "<=", 1000.0, "ms after the last event")],
    ("agent.idle_200_containers", "bulkhead agent process"): [("cpu_fraction_of_one_core", "<=", 0.01, "of a core idle"), ("peak_rss_mb", "<=", 150, "MB RSS")],
    ("agent.scale_event_to_commit", "bulkhead agent"): [("median_ms", "<=", 5.0, "ms median event->commit at 10k containers"), ("p99_ms", "<=", 20.0, "ms p99")],
    ("agent.scale_resync_unchanged", "bulkhead agent"): [("cpu_ms", "<=", 300.0, "ms CPU, resync finding nothing changed")],
    ("agent.scale_idle", "bulkhead agent"): [("cpu_fraction_of_one_core", "<=", 0.01, "of a core idle at 10k containers"), ("peak_rss_mb", "<=", 150, "MB peak RSS")],
    ("validate-1000-files", None): [("seconds", "<=", 1.0, "s"), ("peak_rss_mb", "<=", 100, "MB")],
}

def verdicts(r):
    out = []
    for key, op, limit, what in TARGETS.get((r["bench"], r.get("impl")), []):
        v = r.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            out.append((f"{key}: not measured", f"{op} {limit:g} {what}", "MISSED"))
            continue
        ok = v >= limit if op == ">=" else v <= limit
        out.append((f"{key}={v:.3g}", f"{op} {limit:g} {what}", "met" if ok else "MISSED"))
    return out

print()
def impl(r):  # the shape, for the benchmarks run in several
    return str(r.get("impl", "")) + (f" [{r['shape']}]" if "shape" in r else "")

print(f"{'benchmark':<40} {'implementation':<46} {'figure':<36} {'target':<44} verdict")
missed = 0
for r in rows:
    if r.get("failed"):
        print(f"{r['bench']:<40} {impl(r):<46} {'benchmark failed, exit ' + str(r['exit']):<36} {'':<44} FAILED")
        missed += 1
        continue
    vs = verdicts(r)
    if not vs:
        keys = [k for k in r if k not in ("bench", "impl", "target", "shape")]
        print(f"{r['bench']:<40} {impl(r):<46} " + ", ".join(f"{k}={r[k]}" for k in keys))
        continue
    for figure, target, verdict in vs:
        missed += verdict != "met"
        print(f"{r['bench']:<40} {impl(r):<46} {figure:<36} {target:<44} {verdict}")

# Flat churn: the incremental add's median within 20 % from the smallest to the largest host.
adds = sorted((r["containers"], r["median_ms"]) for r in rows
              if r["bench"] == "enforce.container_added" and r.get("impl") == "bulkhead incremental")
if len(adds) >= 2:
    (n0, m0), (n1, m1) = adds[0], adds[-1]
    growth = m1 / m0 - 1
    verdict = "met" if growth <= 0.2 else "MISSED"
    missed += verdict != "met"
    print(f"{'enforce.container_added':<40} {'flatness':<46} {f'{n0}->{n1}: {growth:+.0%}':<36} {'<= +20% from 100 to 10,000 containers':<44} {verdict}")
print(f"\n{missed} targets missed or failed; written: bench-results.json")
PY
if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: benchmarks failed: ${failed[*]}" >&2
    exit 1
fi
