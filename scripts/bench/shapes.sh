#!/usr/bin/env bash
# Issue 10 item 6: cold apply of 1,000 services / 10,000 containers in every shape gen_shapes.py
# makes, each measured in the same run as
#   - `bulkhead plan` with no table to compare against (an empty, fresh namespace): wall and CPU;
#   - `bulkhead apply --netns` into a fresh namespace, as a whole process: wall (median of 3) and
#     peak RSS;
#   - `nft -f` of the very script that apply sends for `inet bulkhead` (`bulkhead-bench render`), into
#     a fresh namespace. The `bridge bulkhead` part is left out: nft 1.0.6 cannot read back the
#     `iifname . @th,64,128` it lists for the ND target binding; apply sends it too (port binding: a few sets and rules, an element per container address).
# One shape failing is reported as such and the others still run.
# Env: BENCH_SEGMENTS (default 100), BENCH_SHAPES (default: all of gen_shapes.py's).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${BULKHEAD_BIN:-.build/release/bulkhead}
bench=${BULKHEAD_BENCH_BIN:-.build/release/bulkhead-bench}
segments=${BENCH_SEGMENTS:-100}
shapes=${BENCH_SHAPES:-"many-same-dual few-same-dual many-cross-v4 many-cross-v6 many-cross-dual ports-mixed-dual"}
tmp=$(mktemp -d)
nss=()
cleanup() {
    for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
ns=""
fresh_ns() {  # sets ns (not in a subshell, so cleanup knows every namespace)
    ns="bh-shape-bench-$$-${#nss[@]}"
    ip netns add "$ns"
    nss+=("$ns")
}
mb() { echo "$1 / 1024" | bc -l; }

shape_bench() {  # shape_bench SHAPE: JSON lines on stdout, non-zero exit on any failure
    local shape=$1 dir="$tmp/$1" secs user sys kb
    python3 scripts/bench/gen_shapes.py "$dir" "$shape" "$segments" 10 || return 1
    local containers
    containers=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["containers"]))' "$dir/inventory.json")
    "$bench" render "$dir" "$dir/cold.nft" "$dir/bridge.nft" | sed "s/^{/{\"shape\":\"$shape\",/" || return 1

    # plan: nothing in the kernel to compare against.
    fresh_ns
    /usr/bin/time -f '%e %U %S %M' -o "$dir/time" "$bin" plan --policies "$dir/policies" --inventory "$dir/inventory.json" \
        --netns "$ns" > "$dir/plan.out" 2>&1 || { tail -5 "$dir/plan.out" >&2; return 1; }
    read -r secs user sys kb < "$dir/time"
    printf '{"bench":"enforce.shape_plan","impl":"bulkhead plan (no table)","shape":"%s","containers":%s,"wall_s":%s,"cpu_s":%.2f,"peak_rss_mb":%.1f}\n' \
        "$shape" "$containers" "$secs" "$(echo "$user + $sys" | bc -l)" "$(mb "$kb")"
    ip netns del "$ns"

    # apply: three runs, each into a fresh namespace.
    local walls=() rss=0 run
    for run in 1 2 3; do
        fresh_ns
        /usr/bin/time -f '%e %U %S %M' -o "$dir/time" "$bin" apply --policies "$dir/policies" --inventory "$dir/inventory.json" \
            --netns "$ns" > "$dir/apply.out" 2>&1 || { tail -5 "$dir/apply.out" >&2; return 1; }
        read -r secs user sys kb < "$dir/time"
        walls+=("$secs"); [ "$kb" -gt "$rss" ] && rss=$kb
        ip netns del "$ns"
    done
    local median
    median=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n 2p)
    printf '{"bench":"enforce.shape_cold_apply","impl":"bulkhead apply","shape":"%s","containers":%s,"runs":3,"wall_s_median":%s,"wall_s_all":"%s","peak_rss_mb":%.1f}\n' \
        "$shape" "$containers" "$median" "${walls[*]}" "$(mb "$rss")"

    # nft -f of the same script, into a fresh namespace.
    fresh_ns
    /usr/bin/time -f '%e %U %S %M' -o "$dir/time" ip netns exec "$ns" nft -f "$dir/cold.nft" > "$dir/nft.out" 2>&1 \
        || { tail -5 "$dir/nft.out" >&2; return 1; }
    read -r secs user sys kb < "$dir/time"
    printf '{"bench":"enforce.shape_cold_apply","impl":"nft -f (same script)","shape":"%s","wall_s":%s,"peak_rss_mb":%.1f,"bulkhead_over_nft_wall":%.2f}\n' \
        "$shape" "$secs" "$(mb "$kb")" "$(echo "$median / $secs" | bc -l)"
    ip netns del "$ns"
    rm -rf "$dir"
}

status=0
for shape in $shapes; do
    if ! shape_bench "$shape"; then
        echo "error: shape $shape failed; the other shapes go on" >&2
        printf '{"bench":"enforce.shape_cold_apply","impl":"bulkhead apply","shape":"%s","failed":true,"exit":1}\n' "$shape"
        status=1
    fi
done
exit $status
