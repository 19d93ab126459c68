#!/usr/bin/env python3
"""Synthetic deployments of SEGMENTS segments x 10 services x REPLICAS containers, in the shapes
issue 10 asks cold apply to be fast in (1,000 services / 10,000 containers at the defaults):

  many-same-dual    every flow names all ten services of its segment as sources, ten TCP ports,
                    dual-stack (the shape of gen_scale.py: one source set per segment)
  few-same-dual     one or two same-segment sources per flow, two TCP ports, dual-stack
  many-cross-v4     one flow per service naming ten source services, three of them in other
                    segments (so every flow has its own source set), three TCP ports, IPv4 only
  many-cross-v6     the same, IPv6 only
  many-cross-dual   the same, dual-stack
  ports-mixed-dual  dual-stack; single ports beside TCP and UDP ranges, `any` flows, one replica
                    of each service also on the next segment's network, egress to world and to
                    IPv4 and IPv6 CIDRs, world to the front service

Usage: gen_shapes.py OUT SHAPE [SEGMENTS [REPLICAS]]; writes OUT/policies/*.yaml and
OUT/inventory.json."""
import json, os, sys

SHAPES = ["many-same-dual", "few-same-dual", "many-cross-v4", "many-cross-v6", "many-cross-dual", "ports-mixed-dual"]

out, shape = sys.argv[1], sys.argv[2]
segments = int(sys.argv[3]) if len(sys.argv) > 3 else 100
replicas = int(sys.argv[4]) if len(sys.argv) > 4 else 10
if shape not in SHAPES:
    sys.exit(f"unknown shape {shape}; one of: {', '.join(SHAPES)}")
v4 = not shape.endswith("-v6")
v6 = not shape.endswith("-v4")
os.makedirs(f"{out}/policies", exist_ok=True)


def seg(s): return f"seg{s % segments:03d}"
def net(s): return f"net{s % segments:03d}"
def v4addr(s, i): return f"10.{100 + s // 256}.{s % 256}.{i}"
def v6addr(s, i): return f"fd00:{s + 1:x}::{i:x}"


networks, containers = [], []
for s in range(segments):
    subnets, gateways = [], []
    if v4: subnets.append(f"10.{100 + s // 256}.{s % 256}.0/24"); gateways.append(v4addr(s, 1))
    if v6: subnets.append(f"fd00:{s + 1:x}::/64"); gateways.append(v6addr(s, 1))
    networks.append({"name": net(s), "subnets": subnets, "gateways": gateways})
    idx = 2
    for v in range(10):
        for r in range(replicas):
            att = {}
            if v4 and idx < 255: att["ipv4"] = v4addr(s, idx)
            if v6: att["ipv6"] = v6addr(s, idx)
            nets = {net(s): att}
            if shape == "ports-mixed-dual" and r == 0 and segments > 1:
                # one replica of each service also on the next segment's network (host part 200+)
                nets[net(s + 1)] = {"ipv4": v4addr((s + 1) % segments, 200 + v), "ipv6": v6addr((s + 1) % segments, 200 + v)}
            containers.append({"name": f"{seg(s)}-svc{v}-{r}", "labels": {"app": seg(s), "svc": f"svc{v}"}, "networks": nets})
            idx += 1


def flows_of(s):
    """(sources, destination, ports) of segment s."""
    out = []
    for k in range(10):
        if shape == "many-same-dual":
            out.append(([f"svc{v}" for v in range(10)], f"svc{k}", [f"tcp/{1000 + 10 * k + p}" for p in range(10)]))
        elif shape == "few-same-dual":
            srcs = [f"svc{(k + 1) % 10}"] + ([f"svc{(k + 2) % 10}"] if k % 2 else [])
            out.append((srcs, f"svc{k}", [f"tcp/{8000 + k}", f"tcp/{9000 + k}"]))
        elif shape.startswith("many-cross"):
            same = [f"svc{(k + d) % 10}" for d in range(1, 8)]
            # three services of three other segments, different for every (segment, service)
            cross = [f"{seg(s + d * (k + 1))}/svc{(k + d) % 10}" for d in (1, 2, 3)]
            out.append((same + cross, f"svc{k}", [f"tcp/{2000 + k}", f"tcp/{3000 + k}", f"tcp/{4000 + k}"]))
        else:  # ports-mixed-dual
            srcs = [f"svc{(k + 1) % 10}", f"svc{(k + 2) % 10}", f"{seg(s + 1)}/svc{k}"]
            if k == 9:
                out.append(([f"svc8"], "svc9", ["any"]))
                continue
            out.append((srcs, f"svc{k}", [f"tcp/{80 + k}", "tcp/443", f"tcp/{8000 + 100 * k}-{8099 + 100 * k}",
                                          "udp/53", f"udp/{5000 + 10 * k}-{5009 + 10 * k}", "icmp"]))
    if shape == "ports-mixed-dual":
        out.append((["world"], "svc0", ["tcp/80", "tcp/443"]))
        out.append((["svc0", "svc1"], "world", ["tcp/443", "udp/123"]))
        out.append((["svc2"], [{"cidr": f"192.0.{s % 256}.0/24"}, {"cidr": f"2001:db8:{s:x}::/48"}], ["tcp/5432", "tcp/6000-6100"]))
        out.append((["svc3"], "host", ["tcp/9100"]))
        out.append((["svc4"], "world", ["any"]))
    return out


def endpoint(e):
    return f"{{cidr: \"{e['cidr']}\"}}" if isinstance(e, dict) else e


for s in range(segments):
    lines = [f"segment: {seg(s)}", f"networks: [{net(s)}]", "services:"]
    for v in range(10):
        lines += [f"  svc{v}:", f"    labels: {{app: {seg(s)}, svc: svc{v}}}"]
    lines.append("flows:")
    for srcs, dst, ports in flows_of(s):
        dsts = dst if isinstance(dst, list) else [dst]
        lines += ["  - from: [" + ", ".join(endpoint(x) for x in srcs) + "]",
                  "    to: [" + ", ".join(endpoint(x) for x in dsts) + "]",
                  "    ports: [" + ", ".join(ports) + "]"]
    with open(f"{out}/policies/{seg(s)}.yaml", "w") as f:
        f.write("\n".join(lines) + "\n")
with open(f"{out}/inventory.json", "w") as f:
    json.dump({"networks": networks, "containers": containers}, f)
