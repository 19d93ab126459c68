#!/usr/bin/env bash
# The main job on a built-in default: the example policies (a web shop, its monitoring, DNS egress)
# enforced on a lab of network-namespace containers built from policies/inventory.json, proved by
# traffic, then explained; finally what CI sees for a broken policy. Needs root for the lab; it
# touches nothing outside the namespaces it creates, and removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
install_packages
echo "==> swift build"
swift build --product bulkhead 2>&1 | tail -1
bin=.build/debug/bulkhead

step() { printf '\n==> %s\n' "$*"; }

step "bulkhead validate --inventory policies/inventory.json policies"
"$bin" validate --inventory policies/inventory.json policies

step "bulkhead verify --inventory policies/inventory.json --show-plan --matrix   (lab: apply, probe every pair, compare)"
"$bin" verify --inventory policies/inventory.json --show-plan --matrix

step "bulkhead explain: why is shop-frontend-1 -> shop-db-1:5432 denied, and api -> db allowed?"
"$bin" explain --inventory policies/inventory.json --from shop-frontend-1 --to shop-db-1 --port tcp/5432
"$bin" explain --inventory policies/inventory.json --from shop-api-1 --to shop/db --port tcp/5432

step "what CI sees for a broken policy (a typo and a bare port)"
tmp=$(mktemp -d /tmp/bulkhead-demo.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/policies"
sed -e 's/to: api$/to: apii/' -e 's/ports: \[tcp\/5432\]/ports: [5432]/' policies/shop.yaml > "$tmp/policies/shop.yaml"
cp policies/monitoring.yaml policies/dns.yaml "$tmp/policies/"
(cd "$tmp" && "$OLDPWD/$bin" validate policies) || echo "(exit status $?)"
(cd "$tmp" && "$OLDPWD/$bin" validate --format github policies) || true
