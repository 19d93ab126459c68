#!/usr/bin/env bash
# Benchmark: `bulkhead validate` of 1,000 segment files of about 50 flows each.
# Prints one JSON line per measurement. Target: < 1 s and < 100 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BULKHEAD_BIN:-.build/release/bulkhead}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 scripts/bench/gen_policies.py "$tmp/policies" 1000 50
bytes=$(du -sb "$tmp/policies" | cut -f1)
flows=$(cat "$tmp"/policies/*.yaml | grep -c -e '- from:')
"$bin" validate --format json "$tmp/policies" > "$tmp/out.json" || true  # warm the page cache
best=""
rss=0
for _ in 1 2 3 4 5; do
    /usr/bin/time -f '%e %M' -o "$tmp/time" "$bin" validate --format json "$tmp/policies" > "$tmp/out.json" || true
    read -r secs kb < "$tmp/time"
    if [ -z "$best" ] || awk "BEGIN {exit !($secs < $best)}"; then best=$secs; fi
    [ "$kb" -gt "$rss" ] && rss=$kb
done
errors=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["errors"])' "$tmp/out.json")
printf '{"bench":"validate-1000-files","files":1000,"flows":%s,"input_bytes":%s,"seconds":%s,"peak_rss_mb":%.1f,"errors":%s,"target":"< 1 s, < 100 MB"}\n' \
    "$flows" "$bytes" "$best" "$(echo "$rss / 1024" | bc -l)" "$errors"
