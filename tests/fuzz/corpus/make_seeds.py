#!/usr/bin/env python3
"""Turns ring records recorded by kspan_record_seeds into seed files.

    make_seeds.py RECORDS_DIR CORPUS_DIR

RECORDS_DIR holds <family>-<n>.rec files (one ring record each, n in ring
order per family). Writes, replacing what was there:
  http_spans/      whole kspan_http_event records back to back, a few
                   exchanges per file, in ring order
  event_decoder/   records of each family, and of all families in time
                   order, each as a 16-bit little-endian length + bytes
  dns_spans/       the DNS messages the DNS records carry (payload, len)
"""
import glob
import os
import re
import struct
import sys


def records(d, family):
    files = glob.glob(os.path.join(d, f"{family}-*.rec"))
    files.sort(key=lambda f: int(re.search(r"-(\d+)\.rec$", f).group(1)))
    return [open(f, "rb").read() for f in files]


def clear(path, prefix):
    os.makedirs(path, exist_ok=True)
    for f in glob.glob(os.path.join(path, prefix + "*")):
        os.remove(f)


def framed(recs):
    return b"".join(struct.pack("<H", len(r)) + r for r in recs)


def ts(rec):
    # start_ns / ts_ns sits at offset 16 in every family's record.
    return struct.unpack_from("<Q", rec, 16)[0] if len(rec) >= 24 else 0


def main():
    src, out = sys.argv[1], sys.argv[2]

    http = records(src, "http")
    clear(os.path.join(out, "http_spans"), "ring-")
    for i in range(0, len(http), 7):
        with open(os.path.join(out, "http_spans", f"ring-{i // 7:02d}.bin"), "wb") as f:
            f.write(b"".join(http[i:i + 7]))

    clear(os.path.join(out, "event_decoder"), "ring-")
    families = ["process", "tcp_connect", "tcp_accept", "tcp_conn", "tcp_note", "syscall",
                "dns", "http"]
    everything = []
    for fam in families:
        recs = records(src, fam)
        if fam == "syscall":
            # Both sizes: without a path tail and with one.
            plain = [r for r in recs if len(r) == 136][:6]
            tail = [r for r in recs if len(r) != 136][:6]
            recs = plain + tail
        else:
            recs = recs[:12]
        everything += recs
        if recs:
            with open(os.path.join(out, "event_decoder", f"ring-{fam}.bin"), "wb") as f:
                f.write(framed(recs))
    everything.sort(key=ts)
    with open(os.path.join(out, "event_decoder", "ring-all-families.bin"), "wb") as f:
        f.write(framed(everything))

    clear(os.path.join(out, "dns_spans"), "ring-")
    for i, rec in enumerate(records(src, "dns")):
        n = struct.unpack_from("<H", rec, 14)[0]  # len
        with open(os.path.join(out, "dns_spans", f"ring-{i:02d}.bin"), "wb") as f:
            f.write(rec[72:72 + min(n, 256)])


if __name__ == "__main__":
    main()
