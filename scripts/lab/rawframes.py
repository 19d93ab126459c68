#!/usr/bin/python3
"""Sends hand-made frames from one lab namespace and reports which reached another.

Used by the port-binding tests (Tests/BulkheadEnforcementTests/PortBindingTests.swift): the
attacks a container with CAP_NET_RAW can make (spoofed IPv4/IPv6 sources, ARP and neighbour
advert poisoning, 802.1Q / 802.1ad / PPPoE encapsulation) are sent from the attacker's
namespace; a packet socket in the victim's namespace records what arrives.

Synchronisation without sleeps: after the attack frames, the sender sends a canary frame that
the dataplane lets through (an ARP request of the attacker's own, unicast to the victim, with
the canary marker in its padding). The sender is pinned to one CPU, so every frame travels the
same per-CPU queues in order: once the canary is seen, every attack frame sent before it has
either arrived or been dropped. A hang guard (--timeout) ends the wait if the canary never comes.

Input: one JSON object on stdin (namespaces by name under /var/run/netns, or by path):
  {"sniff_ns": "NAME", "sniff_if": "eth0", "send_ns": "NAME", "send_if": "eth0",
   "attacker": {"mac", "ipv4", "ipv6"}, "victim": {...}, "impersonated": {...},
   "attacks": ["spoof-tcp4", ...], "timeout": 10}
Output: one JSON object: {"seen": [attack names that arrived], "canary": true|false}
"""
import ctypes
import json
import os
import select
import socket
import sys
import time

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Padding, Raw

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter(ns):
    """Enters a namespace by name (/var/run/netns) or path (a container's SandboxKey, /proc/PID/ns/net)."""
    fd = os.open(ns if ns.startswith("/") else "/var/run/netns/" + ns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (ns, os.strerror(e)))
    finally:
        os.close(fd)


def marker(name):
    return ("BULKHEAD-ATTACK-%s-%d" % (name, os.getpid())).encode()


spec_port = 5432


def frame(name, a, v, imp):
    """The attack frame `name`: sent by attacker `a` to victim `v`, impersonating `imp`."""
    m = marker(name)
    eth = Ether(src=a["mac"], dst=v["mac"])
    kind, _, rest = name.partition("-")
    proto = rest[:-1]
    six = rest.endswith("6")

    def l3(src4, src6):
        if six:
            return IPv6(src=src6, dst=v["ipv6"])
        return IP(src=src4, dst=v["ipv4"])

    def l4():
        if proto == "tcp":
            return TCP(sport=40000, dport=int(spec_port), flags="S", seq=1) / Raw(m)
        if proto == "udp":
            return UDP(sport=40000, dport=int(spec_port)) / Raw(m)
        if proto == "icmp":
            return (ICMPv6EchoRequest(id=7, seq=1) if six else ICMP(type=8, id=7, seq=1)) / Raw(m)
        raise SystemExit("unknown protocol in " + name)

    if name == "arp-poison":  # "who-has victim, tell <impersonated IPv4> at <attacker MAC>"
        return eth / ARP(op=1, hwsrc=a["mac"], psrc=imp["ipv4"], hwdst="00:00:00:00:00:00", pdst=v["ipv4"]) / Padding(m)
    if name == "na-poison":   # unsolicited override NA: <impersonated IPv6> is at <attacker MAC>
        return (eth / IPv6(src=a["linklocal"], dst=v["ipv6"], hlim=255)
                / ICMPv6ND_NA(tgt=imp["ipv6"], R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=a["mac"]))
    if kind == "ll":         # own link-local address to the victim's link-local address
        return eth / IPv6(src=a["linklocal"], dst=v["linklocal"]) / l4()
    if kind == "spoof":      # another container's source address, own MAC
        return eth / l3(imp["ipv4"], imp["ipv6"]) / l4()
    if kind == "spoofmac":   # another container's source address and MAC
        return Ether(src=imp["mac"], dst=v["mac"]) / l3(imp["ipv4"], imp["ipv6"]) / l4()
    own = l3(a["ipv4"], a["ipv6"]) / l4()
    if kind == "vlan0":      # 802.1Q priority tag
        return eth / Dot1Q(vlan=0, prio=5) / own
    if kind == "vlan5":
        return eth / Dot1Q(vlan=5) / own
    if kind == "qinq":       # 802.1ad outer tag, 802.1Q inner tag
        return Ether(src=a["mac"], dst=v["mac"], type=0x88A8) / Dot1AD(vlan=7) / Dot1Q(vlan=0) / own
    if kind == "pppoe":      # PPPoE session frame carrying IP
        return eth / PPPoE(sessionid=1) / PPP(proto=0x0057 if six else 0x0021) / own
    raise SystemExit("unknown attack " + name)


def main():
    global spec_port
    spec = json.load(sys.stdin)
    spec_port = int(spec.get("port", 5432))
    a, v, imp = spec["attacker"], spec["victim"], spec["impersonated"]
    attacks = spec["attacks"]
    deadline = time.monotonic() + float(spec.get("timeout", 10))
    # One CPU: every frame takes the same backlog queue, so arrival order is sending order.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    enter(spec["sniff_ns"])
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniffer.bind((spec["sniff_if"], 0))
    sniffer.setblocking(False)

    enter(spec["send_ns"])
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sender.bind((spec["send_if"], 0))

    for name in attacks:
        sender.send(bytes(frame(name, a, v, imp)))
    canary = ("BULKHEAD-CANARY-%d" % os.getpid()).encode()
    sender.send(bytes(Ether(src=a["mac"], dst=v["mac"])
                      / ARP(op=1, hwsrc=a["mac"], psrc=a["ipv4"], hwdst="00:00:00:00:00:00", pdst=v["ipv4"])
                      / Padding(canary)))

    attacker_mac = bytes.fromhex(a["mac"].replace(":", ""))
    markers = {marker(n): n for n in attacks if n not in ("na-poison",)}
    seen, got_canary = set(), False
    while not got_canary:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([sniffer], [], [], left)
        if not r:
            continue
        while True:
            try:
                data = sniffer.recv(65535)
            except BlockingIOError:
                break
            if canary in data:
                got_canary = True
            for m, n in markers.items():
                if m in data:
                    seen.add(n)
            # The NA carries no marker: an ICMPv6 NA (IPv6 next header 58 at 20, type 136 at 54)
            # from the attacker's MAC whose target is the impersonated address.
            if ("na-poison" in attacks and len(data) >= 78 and data[6:12] == attacker_mac
                    and data[12:14] == b"\x86\xdd" and data[20] == 58 and data[54] == 136
                    and data[62:78] == socket.inet_pton(socket.AF_INET6, imp["ipv6"])):
                seen.add("na-poison")
    json.dump({"seen": sorted(seen), "canary": got_canary}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
