#!/usr/bin/env python3
"""A device that follows docs/push.md with nothing but paho 1.6.1, driven by the tests through stdout.

It subscribes to devices/{id}/commands (QoS 1), and for every command publishes a result to
devices/{id}/results (QoS 1): {"id", "status", "payload": {"echo": <name>}}. A command it has answered
already (same id) is a duplicate: it answers the same again, as the contract asks a device to.
Lines:  READY | CMD <command json> | PROPS <response topic> <correlation data> | DUP <id> | DONE | TIMEOUT
Exit: 0 done, 3 refused or lost, 4 timeout.
"""
import argparse
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

lock = threading.Lock()


def out(*parts):
    with lock:
        print(*parts, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--version", choices=["3", "5"], default="5")
    p.add_argument("--status", default="succeeded")
    p.add_argument("--count", type=int, default=1, help="distinct commands to answer before exiting")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()

    v5 = a.version == "5"
    client = mqtt.Client(client_id=a.id, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         **({} if v5 else {"clean_session": True}))
    client.username_pw_set(a.id, a.secret)
    topic = "devices/%s/commands" % a.id
    results = "devices/%s/results" % a.id
    answered = {}
    done = threading.Event()
    failed = threading.Event()
    finished = threading.Event()
    pending = []

    def on_connect(c, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        if code != 0:
            out("CONNACK", code)
            failed.set()
            finished.set()
            return
        c.subscribe(topic, qos=1)

    def on_subscribe(c, userdata, mid, granted, properties=None):
        out("READY")

    def on_message(c, userdata, msg):
        body = json.loads(msg.payload.decode("utf-8"))
        out("CMD", json.dumps(body, separators=(",", ":")))
        if v5 and msg.properties is not None:
            rt = getattr(msg.properties, "ResponseTopic", None)
            cd = getattr(msg.properties, "CorrelationData", None)
            out("PROPS", rt, cd.decode("utf-8") if cd else None)
        cid = body["id"]
        if cid in answered:
            out("DUP", cid)
        answered[cid] = True
        result = {"id": cid, "status": a.status, "payload": {"echo": body["name"]}}
        info = c.publish(results, json.dumps(result), qos=1)
        pending.append(info)
        if len(answered) >= a.count:
            threading.Thread(target=finish, daemon=True).start()

    def finish():
        for info in list(pending):
            info.wait_for_publish(timeout=a.timeout)
        done.set()
        finished.set()

    def on_disconnect(c, userdata, rc, properties=None):
        if not done.is_set():
            failed.set()
            finished.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    client.connect(a.host, a.port, keepalive=30)
    client.loop_start()
    finished.wait(a.timeout)
    if failed.is_set() and not done.is_set():
        out("LOST")
        client.loop_stop()
        sys.exit(3)
    if not done.is_set():
        out("TIMEOUT")
        client.loop_stop()
        sys.exit(4)
    client.disconnect()
    client.loop_stop()
    out("DONE")
    sys.exit(0)


if __name__ == "__main__":
    main()
