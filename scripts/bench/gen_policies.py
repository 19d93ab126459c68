#!/usr/bin/env python3
"""Writes N synthetic segment files of about F flows each (valid, realistic shapes) for the
validate benchmark: local and cross-segment services, CIDRs, world and host, port ranges."""
import os, random, sys

out, n_files, n_flows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
services_per_segment = 20
rng = random.Random(42)
os.makedirs(out, exist_ok=True)
for i in range(n_files):
    seg = f"seg-{i:04d}"
    lines = [f"segment: {seg}", f"description: synthetic segment {i}", f"networks: [net-{i:04d}]", "services:"]
    for s in range(services_per_segment):
        lines += [f"  svc-{s:02d}:", f"    labels: {{com.docker.compose.project: {seg}, com.docker.compose.service: svc-{s:02d}}}"]
    lines.append("flows:")
    for f in range(n_flows):
        src = rng.choice([f"svc-{rng.randrange(services_per_segment):02d}", "world", "host",
                          f"seg-{rng.randrange(n_files):04d}/svc-{rng.randrange(services_per_segment):02d}"])
        dst = f"svc-{f % services_per_segment:02d}"
        if rng.random() < 0.2:
            src, dst = dst, rng.choice(["world", "{cidr: 198.51.100.0/24}", "{cidr: \"2001:db8::/48\"}"])
        port = rng.choice([f"tcp/{rng.randrange(1, 65535)}", f"udp/{rng.randrange(1, 65535)}",
                           f"tcp/{1000 + f}-{2000 + f}", "icmp"])
        lines += [f"  - from: {src}", f"    to: {dst}", f"    ports: [{port}, tcp/{10000 + f}]", f"    description: flow {f}"]
    with open(os.path.join(out, f"{seg}.yaml"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
