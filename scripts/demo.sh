#!/usr/bin/env bash
# The main job on a built-in default: validate the example policies against the example inventory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
install_packages
swift build --product bulkhead 2>&1 | tail -1
bin=.build/debug/bulkhead

echo "==> bulkhead validate --inventory policies/inventory.json policies"
"$bin" validate --inventory policies/inventory.json policies

echo
echo "==> the same broken on purpose (a typo and a bare port), as CI would see it"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e 's/to: api$/to: apii/' -e 's/ports: \[tcp\/5432\]/ports: [5432]/' policies/shop.yaml > "$tmp/shop.yaml"
cp policies/monitoring.yaml policies/dns.yaml "$tmp/"
"$bin" validate "$tmp" || echo "(exit status $?)"
echo
echo "==> as GitHub annotations"
"$bin" validate --format github "$tmp" || true
