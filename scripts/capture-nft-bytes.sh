#!/usr/bin/env bash
# Captures the netlink messages nft sends for a script, as the expected bytes of
# Tests/BulkheadNetfilterTests/GoldenBytesTests.swift (the goldens that say "captured from nft").
#
#   scripts/capture-nft-bytes.sh SETUP.nft SCRIPT.nft
#
# SETUP.nft runs first, uncaptured (the objects SCRIPT.nft deletes or flushes); SCRIPT.nft runs
# under `strace -e trace=sendmsg -e write=all` in a throwaway network namespace, and every
# message of its batch is printed after the 16-byte nlmsghdr (whose flags and seq differ from
# ours: nft 1.0.6 asks for no per-message ack), one attribute per line, as Swift byte literals.
# Needs root, nft and strace. Never touches the host's own ruleset.
set -euo pipefail
setup=${1:?usage: $0 SETUP.nft SCRIPT.nft}
script=${2:?usage: $0 SETUP.nft SCRIPT.nft}
ns="bh-capture-$$"
trace=$(mktemp)
ip netns add "$ns"
trap 'ip netns del "$ns"; rm -f "$trace"' EXIT
ip netns exec "$ns" nft -f "$setup"
ip netns exec "$ns" strace -e trace=sendmsg -e write=all -o "$trace" nft -f "$script"
python3 - "$trace" <<'PY'
import re, sys, struct
data = bytearray()
batches = []
for line in open(sys.argv[1]):
    m = re.match(r'\s*\| [0-9a-f]{5}  (.{49})', line)
    if m:
        data += bytes.fromhex(m.group(1).replace(' ', ''))
    elif line.startswith('sendmsg(') and data:
        # A new system call; the iovecs of one sendmsg (" * N bytes in buffer i") are one stream.
        batches.append(data)
        data = bytearray()
if data:
    batches.append(data)
names = {0: 'NEWTABLE', 2: 'DELTABLE', 3: 'NEWCHAIN', 5: 'DELCHAIN', 6: 'NEWRULE', 8: 'DELRULE',
         9: 'NEWSET', 11: 'DELSET', 12: 'NEWSETELEM', 14: 'DELSETELEM'}
for b in batches:
    off = 0
    while off + 16 <= len(b):
        length, mtype, flags = struct.unpack_from('<IHH', b, off)
        if length < 16:
            break
        msg = b[off:off + length]
        sub, kind = mtype >> 8, mtype & 0xff
        label = names.get(kind, hex(kind)) if sub == 10 else ('BATCH' if mtype in (16, 17) else hex(mtype))
        print(f'// {label} len {length} flags {flags:#06x}')
        print('    ' + ', '.join(f'0x{x:02x}' for x in msg[16:20]) + ',  // nfgenmsg')
        a = 20
        while a + 4 <= len(msg):
            alen, atype = struct.unpack_from('<HH', msg, a)
            span = (alen + 3) & ~3
            print('    ' + ', '.join(f'0x{x:02x}' for x in msg[a:a + max(span, 4)]) + f',  // attr {atype & 0x3fff}')
            a += max(span, 4)
        off += (length + 3) & ~3
PY
