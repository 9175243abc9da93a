#!/usr/bin/env python3
"""The client side of the NAT lab's behaviour tests (stdlib only); runs in a client namespace behind a NAT.

Talks to udp_reporter.py and prints one result line per observation, for the tests to parse:
  map    --to A:P [--to A:P ...]   one socket, a MAP to each destination in turn:
                                   "MAPPED <dest> <mapped ip:port>" or "NOREPLY <dest>"
  filter --to A:P                  a fresh socket sends FILTER to one destination only, then reads until
                                   DONE; every unsolicited packet that got through is "FROM <reporter
                                   socket>"; a SYNC round trip after DONE lets a straggler land first.
                                   Ends with "FILTERED <local port>" or "NOREPLY <dest>"
  stun   --to A:P [--to A:P ...]   one socket, an RFC 8489 Binding request to each STUN server in turn:
                                   "MAPPED <dest> <XOR-MAPPED-ADDRESS>" or "NOREPLY <dest>"
  tcp    --to A:P                  a TCP connection, one MAP: "MAPPED <dest> <mapped>" or "NOREPLY <dest>"
  hold   --to A:P --keepalive K --duration D
                                   one socket: a MAP ("MAPPED <dest> <mapped>"), then a KEEP datagram to
                                   the same destination every K seconds (never when K is 0) for D seconds,
                                   printing "POKED <source>" for every POKED datagram that reaches it.
Every wait is bounded (--timeout per try, --tries); exit 0 always, the lines carry the verdict.
"""
import argparse
import os
import socket
import struct
import sys
import time


def endpoint(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def out(*parts):
    print(*parts, flush=True)


def ask(s, request, dest, want, token, timeout, tries, seen=None):
    """Sends request until a reply starting with `want <token>` arrives; other lines for this token go to seen."""
    s.settimeout(timeout)
    for _ in range(tries):
        s.sendto(request.encode(), dest)
        try:
            while True:
                data, source = s.recvfrom(2048)
                words = data.decode("ascii", "replace").split()
                if len(words) < 2 or words[1] != token:
                    continue
                if words[0] == want:
                    return words, source
                if seen is not None:
                    seen.append((words, source))
        except socket.timeout:
            continue
    return None, None


MAGIC = 0x2112A442


def stun_binding(s, dest, timeout, tries):
    """RFC 8489 section 5: a Binding request; the answer's XOR-MAPPED-ADDRESS (section 14.2) as ip:port."""
    tid = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, MAGIC) + tid
    s.settimeout(timeout)
    for _ in range(tries):
        s.sendto(request, dest)
        try:
            while True:
                data, _ = s.recvfrom(2048)
                if len(data) < 20 or data[8:20] != tid or struct.unpack("!H", data[:2])[0] != 0x0101:
                    continue
                at, end = 20, 20 + struct.unpack("!H", data[2:4])[0]
                while at + 4 <= min(end, len(data)):
                    kind, length = struct.unpack("!HH", data[at:at + 4])
                    value = data[at + 4:at + 4 + length]
                    if kind == 0x0020 and length == 8 and value[1] == 0x01:
                        port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
                        address = struct.unpack("!I", value[4:8])[0] ^ MAGIC
                        return "%s:%d" % (socket.inet_ntoa(struct.pack("!I", address)), port)
                    at += 4 + (length + 3) // 4 * 4
                return None
        except socket.timeout:
            continue
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["map", "filter", "tcp", "hold", "stun"])
    p.add_argument("--to", action="append", required=True, type=endpoint)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--keepalive", type=float, default=0)
    p.add_argument("--duration", type=float, default=120)
    a = p.parse_args()
    token = os.urandom(6).hex()

    def name(e):
        return "%s:%d" % e

    if a.mode == "map":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        out("LOCAL", s.getsockname()[1])
        for dest in a.to:
            words, _ = ask(s, "MAP " + token, dest, "SEEN", token, a.timeout, a.tries)
            out("MAPPED", name(dest), words[2]) if words else out("NOREPLY", name(dest))
    elif a.mode == "filter":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        dest = a.to[0]
        seen = []
        words, _ = ask(s, "FILTER " + token, dest, "DONE", token, a.timeout, a.tries, seen)
        if words is None:
            out("NOREPLY", name(dest))
            return 0
        ask(s, "SYNC " + token, dest, "SYNCED", token, a.timeout, a.tries, seen)
        for w, source in sorted(set((tuple(w), src) for w, src in seen)):
            if w[0] == "FROM":
                out("FROM", name(source))
        out("FILTERED", s.getsockname()[1])
    elif a.mode == "stun":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        for dest in a.to:
            mapped = stun_binding(s, dest, a.timeout, a.tries)
            out("MAPPED", name(dest), mapped) if mapped else out("NOREPLY", name(dest))
    elif a.mode == "hold":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        dest = a.to[0]
        words, _ = ask(s, "MAP " + token, dest, "SEEN", token, a.timeout, a.tries)
        if words is None:
            out("NOREPLY", name(dest))
            return 0
        out("MAPPED", name(dest), words[2])
        end = time.monotonic() + a.duration
        next_keep = time.monotonic() + a.keepalive
        while time.monotonic() < end:
            wait = end - time.monotonic()
            if a.keepalive > 0:
                wait = min(wait, max(0.0, next_keep - time.monotonic()))
            s.settimeout(max(0.01, wait))
            try:
                data, source = s.recvfrom(2048)
                if data.startswith(b"POKED "):
                    out("POKED", name(source))
            except socket.timeout:
                pass
            if a.keepalive > 0 and time.monotonic() >= next_keep:
                s.sendto(("KEEP " + token).encode(), dest)
                next_keep += a.keepalive
        out("HELD")
    else:
        dest = a.to[0]
        try:
            with socket.create_connection(dest, timeout=a.timeout * a.tries) as c:
                c.sendall(("MAP %s\n" % token).encode())
                words = c.makefile("r").readline().split()
                out("MAPPED", name(dest), words[2]) if len(words) == 4 else out("NOREPLY", name(dest))
        except OSError as e:
            out("NOREPLY", name(dest), type(e).__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
