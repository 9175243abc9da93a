#!/usr/bin/env python3
"""A scriptable MQTT client (Eclipse paho 1.6.1) that the interop tests drive through its stdout.

Each line it prints is an event the test waits on, never a timing guess:
  CONNACK <code>             the broker's answer (v3.1.1 return code or v5 reason code)
  SUBACK <code>[,<code>...]  granted QoS or failure code per filter, one SUBSCRIBE per --topic
  READY                      every subscription is in place (sub) / connected with a will (will)
  MSG <json>                 a received PUBLISH: topic, payload (UTF-8), qos, retain
  PUBLISHED <n>              every PUBLISH completed its QoS flow (PUBACK / PUBCOMP received)
  DONE                       finished; the client sent DISCONNECT
  TIMEOUT <what>             gave up waiting (exit code 4)
Exit codes: 0 done, 3 connection refused (CONNACK != 0) or lost, 4 timeout, 2 usage.
"""
import argparse
import json
import os
import queue
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


_print_lock = threading.Lock()


def out(*parts):
    # The network thread (messages) and the main thread (acks) both print; one line at a time.
    with _print_lock:
        sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
        sys.stdout.flush()


def code_of(rc):
    # v5 callbacks hand a ReasonCodes object, v3.1.1 callbacks an int.
    return rc.value if hasattr(rc, "value") else int(rc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["connect", "sub", "pub", "will"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", choices=["311", "5"], default="311")
    p.add_argument("--transport", choices=["tcp", "tls", "ws"], default="tcp")
    p.add_argument("--ca")
    p.add_argument("--ws-path", default="/mqtt")
    p.add_argument("--client-id", required=True)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--clean", type=int, default=1)
    p.add_argument("--session-expiry", type=int, default=0)
    p.add_argument("--keepalive", type=int, default=60)
    p.add_argument("--topic", action="append", default=[])
    p.add_argument("--qos", type=int, default=0)
    p.add_argument("--retain", type=int, default=0)
    p.add_argument("--payload", action="append", default=[])
    p.add_argument("--empty", action="store_true", help="publish one zero-length payload (clears a retained message)")
    p.add_argument("--count", type=int, default=0, help="sub: exit after this many messages")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--will-topic")
    p.add_argument("--will-payload", default="")
    p.add_argument("--will-qos", type=int, default=0)
    a = p.parse_args()

    v5 = a.version == "5"
    transport = "websockets" if a.transport == "ws" else "tcp"
    if v5:
        c = mqtt.Client(client_id=a.client_id, protocol=mqtt.MQTTv5, transport=transport)
    else:
        c = mqtt.Client(client_id=a.client_id, clean_session=bool(a.clean), protocol=mqtt.MQTTv311, transport=transport)
    if a.transport == "ws":
        c.ws_set_options(path=a.ws_path)
    if a.transport == "tls":
        c.tls_set(ca_certs=a.ca)
    if a.username is not None:
        c.username_pw_set(a.username, a.password)
    if a.will_topic:
        c.will_set(a.will_topic, a.will_payload, qos=a.will_qos)

    events = queue.Queue()
    # Messages are counted apart from the other events: a persistent session's queued messages may
    # arrive before the SUBACK the script is waiting for.
    arrived = threading.Condition()
    counter = [0]

    def on_connect(client, userdata, flags, rc, properties=None):
        events.put(("connack", code_of(rc)))

    def on_subscribe(client, userdata, mid, granted, properties=None):
        events.put(("suback", [code_of(g) for g in granted]))

    def on_message(client, userdata, m):
        out("MSG " + json.dumps({"topic": m.topic, "payload": m.payload.decode("utf-8", "replace"),
                                 "qos": m.qos, "retain": int(m.retain)}))
        with arrived:
            counter[0] += 1
            arrived.notify_all()

    def on_disconnect(client, userdata, rc, properties=None):
        events.put(("disconnect", code_of(rc)))

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_disconnect = on_disconnect

    def wait(kind):
        while True:
            try:
                k, v = events.get(timeout=a.timeout)
            except queue.Empty:
                out("TIMEOUT", kind)
                os._exit(4)
            if k == kind:
                return v
            if k == "disconnect" and kind != "disconnect":
                out("DISCONNECTED", v)
                os._exit(3)

    try:
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if a.session_expiry:
                props.SessionExpiryInterval = a.session_expiry
            c.connect(a.host, a.port, keepalive=a.keepalive, clean_start=bool(a.clean), properties=props)
        else:
            c.connect(a.host, a.port, keepalive=a.keepalive)
    except OSError as e:
        out("CONNECT_FAILED", repr(e))
        os._exit(3)
    c.loop_start()
    rc = wait("connack")
    out("CONNACK", rc)
    if rc != 0:
        os._exit(3)

    if a.mode == "will":
        out("READY")
        # Stays connected until the test kills the process: the socket then closes without DISCONNECT.
        threading.Event().wait()

    if a.mode == "sub":
        for t in a.topic:
            c.subscribe(t, qos=a.qos)
            out("SUBACK", ",".join(str(g) for g in wait("suback")))
        out("READY")
        with arrived:
            if not arrived.wait_for(lambda: counter[0] >= a.count, timeout=a.timeout):
                out("TIMEOUT", "messages received=%d" % counter[0])
                os._exit(4)

    if a.mode == "pub":
        infos = []
        payloads = [b""] if a.empty else a.payload
        for t in a.topic:
            for pl in payloads:
                infos.append(c.publish(t, pl, qos=a.qos, retain=bool(a.retain)))
        for info in infos:
            info.wait_for_publish(timeout=a.timeout)
            if not info.is_published():
                out("TIMEOUT", "publish")
                os._exit(4)
        out("PUBLISHED", len(infos))

    c.disconnect()
    c.loop_stop()
    out("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
