# Shared by scripts/*.sh: toolchain path and the packages Bulkhead needs on a Debian machine.
# shellcheck shell=bash

export PATH="/opt/swift/usr/bin:/usr/sbin:/sbin:$PATH"

# Build and runtime needs: C libraries (libyaml, libnftnl, libmnl), the kernel tools the tests use as
# independent oracles and test-host builders (nft, ip), Docker and the busybox image source, and
# helpers for the privilege and benchmark checks (setpriv, /usr/bin/time), scapy for the
# hand-made attack frames of the port-binding tests (scripts/lab/rawframes.py), and systemd-analyze
# (the unit file test runs `systemd-analyze verify`), and strace for scripts/capture-nft-bytes.sh
# (the golden bytes captured from nft).
BULKHEAD_PACKAGES=(
    pkg-config libyaml-dev libnftnl-dev libmnl-dev
    nftables iproute2 iptables conntrack
    docker.io busybox-static
    util-linux libcap2-bin time procps bc
    python3-scapy
    firewalld dbus
    systemd
    strace
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
        # firewalld is for the coexistence tests, which run their own inside a lab namespace: the
        # package must not start one on the host itself (it would firewall the machine and Docker),
        # so it is installed apart with service starts refused (policy-rc.d exit 101).
        local others=() daemon=()
        for p in "${missing[@]}"; do
            if [ "$p" = firewalld ]; then daemon+=("$p"); else others+=("$p"); fi
        done
        if [ "${#others[@]}" -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${others[@]}" >/dev/null
        fi
        if [ "${#daemon[@]}" -gt 0 ]; then
            local own_policy=0
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && own_policy=1
            fi
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${daemon[@]}" >/dev/null || { [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 1; }
            [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
            if [ -d /run/systemd/system ]; then
                systemctl disable --now firewalld >/dev/null 2>&1 || true
            fi
        fi
    fi
    # Python helpers used by the schema cross-check test.
    if ! python3 -c 'import jsonschema, yaml' 2>/dev/null; then
        echo "==> installing python jsonschema, pyyaml"
        python3 -m pip install -q jsonschema pyyaml
    fi
}
