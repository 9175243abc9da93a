#!/usr/bin/env python3
"""The public peer of the NAT lab's behaviour tests (stdlib only); runs in the server namespace.

It listens on UDP at every (address, port) pair given and on TCP at the first pair, and tells a probe
(udp_probe.py) what it saw, so the tests judge each NAT from the packets themselves (RFC 4787):
  MAP <token>     -> "SEEN <token> <source ip:port> <local ip:port>" back from the socket that got it
                     (the source is the NAT's mapping for that destination: RFC 4787 section 4.1).
  FILTER <token>  -> "FROM <token> <local>" from every other socket to the same source, unsolicited
                     (RFC 4787 section 5: which of them the NAT lets in is its filtering), then
                     "DONE <token>" from the socket that got the request, last.
  SYNC <token>    -> "SYNCED <token>"
  POKE <token> <ip:port>  (from the test) -> "POKED <token>" to that endpoint from the socket that got the
                     request, and "POKING <token>" back to the requester: reaches a NAT mapping only while
                     it exists (the keepalive tests).
  TCP: one line "MAP <token>" -> "SEEN <token> <source ip:port> <local ip:port>".
Prints "LISTENING" once every socket is bound, and one "GOT <kind> <source> <local>" line per request.
"""
import argparse
import selectors
import socket
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--address", action="append", required=True)
    p.add_argument("--port", type=int, action="append", required=True)
    a = p.parse_args()

    sel = selectors.DefaultSelector()
    udp = []
    for address in a.address:
        for port in a.port:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((address, port))
            s.setblocking(False)
            udp.append(s)
            sel.register(s, selectors.EVENT_READ, "udp")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((a.address[0], a.port[0]))
    listener.listen(16)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, "listen")
    print("LISTENING", flush=True)

    def name(endpoint):
        return "%s:%d" % endpoint

    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if key.data == "listen":
                conn, source = s.accept()
                conn.settimeout(5)
                try:
                    line = conn.makefile("r").readline().split()
                    if len(line) == 2 and line[0] == "MAP":
                        print("GOT TCP", name(source), name(conn.getsockname()), flush=True)
                        conn.sendall(("SEEN %s %s %s\n" % (line[1], name(source), name(conn.getsockname()))).encode())
                except OSError:
                    pass
                finally:
                    conn.close()
                continue
            try:
                data, source = s.recvfrom(2048)
            except OSError:
                continue
            words = data.decode("ascii", "replace").split()
            if len(words) == 3 and words[0] == "POKE":
                host, port = words[2].rsplit(":", 1)
                print("GOT POKE", name(source), words[2], flush=True)
                s.sendto(("POKED %s" % words[1]).encode(), (host, int(port)))
                s.sendto(("POKING %s" % words[1]).encode(), source)
                continue
            if len(words) != 2:
                continue
            kind, token = words
            local = name(s.getsockname())
            print("GOT", kind, name(source), local, flush=True)
            if kind == "MAP":
                s.sendto(("SEEN %s %s %s" % (token, name(source), local)).encode(), source)
            elif kind == "FILTER":
                for other in udp:
                    if other is not s:
                        other.sendto(("FROM %s %s" % (token, name(other.getsockname()))).encode(), source)
                s.sendto(("DONE %s" % token).encode(), source)
            elif kind == "SYNC":
                s.sendto(("SYNCED %s" % token).encode(), source)


if __name__ == "__main__":
    sys.exit(main())
