# Shared by scripts/*.sh: toolchain path and the packages Bulkhead needs on a Debian machine.
# shellcheck shell=bash

export PATH="/opt/swift/usr/bin:/usr/sbin:/sbin:$PATH"

# Build and runtime needs: C libraries (libyaml, libnftnl, libmnl), the kernel tools the tests use as
# independent oracles and test-host builders (nft, ip), Docker and the busybox image source, and
# helpers for the privilege and benchmark checks (setpriv, /usr/bin/time), and scapy for the
# hand-made attack frames of the port-binding tests (scripts/lab/rawframes.py).
BULKHEAD_PACKAGES=(
    pkg-config libyaml-dev libnftnl-dev libmnl-dev
    nftables iproute2 iptables conntrack
    docker.io busybox-static
    util-linux libcap2-bin time procps bc
    python3-scapy
)

# Installs whatever of BULKHEAD_PACKAGES is missing. Idempotent; runs apt-get only when needed.
install_packages() {
    local missing=()
    local p
    for p in "${BULKHEAD_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing: ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: packages missing (${missing[*]}) and not root: run as root or install them" >&2
            return 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Python helpers used by the schema cross-check test.
    if ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
        echo "==> installing python jsonschema, pyyaml"
        python3 -m pip install -q jsonschema pyyaml
    fi
}
