#!/usr/bin/env python3
"""Synthetic deployment for the enforcement benchmarks: SEGMENTS segments of 10 services, each
service with REPLICAS containers (v4 + v6), and per segment 10 flows "all ten services -> service k
on 10 TCP ports": SEGMENTS * 10 * 10 * 10 allowed (service pair, port) combinations.

Writes OUT/policies/*.yaml, OUT/inventory.json and OUT/linear.nft — the same policy as a linear
nftables ruleset, one rule per (source service, destination service, port) with anonymous address
sets, the shape an iptables-style tool produces — for `nft -f` beside `bulkhead apply`."""
import json, os, sys

out, segments, replicas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{out}/policies", exist_ok=True)
networks, containers = [], []
linear = ["table inet linear {", "\tchain forward {", "\t\ttype filter hook forward priority filter - 10; policy accept;",
          "\t\tct state established,related accept"]
for s in range(segments):
    seg = f"seg{s:03d}"
    net = f"net{s:03d}"
    hi, lo = s // 256, s % 256
    networks.append({"name": net, "subnets": [f"10.{100 + hi}.{lo}.0/24".replace("/24", "/24"), f"fd00:{s + 1:x}::/64"],
                     "gateways": [f"10.{100 + hi}.{lo}.1", f"fd00:{s + 1:x}::1"]})
    addrs = {}
    idx = 2
    for v in range(10):
        svc = f"svc{v}"
        addrs[svc] = []
        for r in range(replicas):
            # replicas beyond what a /24 holds spill into a second address block of the /64 only
            a4 = f"10.{100 + hi}.{lo}.{idx}" if idx < 255 else None
            a6 = f"fd00:{s + 1:x}::{idx:x}"
            att = {"ipv6": a6}
            if a4: att["ipv4"] = a4
            containers.append({"name": f"{seg}-{svc}-{r}", "labels": {"app": seg, "svc": svc}, "networks": {net: att}})
            addrs[svc].append((a4, a6))
            idx += 1
    lines = [f"segment: {seg}", f"networks: [{net}]", "services:"]
    for v in range(10):
        lines += [f"  svc{v}:", f"    labels: {{app: {seg}, svc: svc{v}}}"]
    lines.append("flows:")
    for k in range(10):
        ports = [1000 + 10 * k + p for p in range(10)]
        lines += ["  - from: [" + ", ".join(f"svc{v}" for v in range(10)) + "]", f"    to: svc{k}",
                  "    ports: [" + ", ".join(f"tcp/{p}" for p in ports) + "]"]
        for v in range(10):
            src4 = ", ".join(a for a, _ in addrs[f"svc{v}"] if a)
            dst4 = ", ".join(a for a, _ in addrs[f"svc{k}"] if a)
            for p in ports:
                if src4 and dst4:
                    linear.append(f"\t\tip saddr {{ {src4} }} ip daddr {{ {dst4} }} tcp dport {p} accept")
    with open(f"{out}/policies/{seg}.yaml", "w") as f:
        f.write("\n".join(lines) + "\n")
linear += ["\t\tdrop", "\t}", "}"]
with open(f"{out}/inventory.json", "w") as f:
    json.dump({"networks": networks, "containers": containers}, f)
with open(f"{out}/linear.nft", "w") as f:
    f.write("\n".join(linear) + "\n")
