#!/usr/bin/env python3
"""A device behind a lab NAT (paho 1.6.1): stays connected and answers every command (docs/push.md).

Unlike Push/Commands/scripts/command_device.py it takes the broker's host and the MQTT keep-alive, and
it never exits on its own before --timeout: the NAT tests let it idle, then push to it.
Subscribes to devices/{id}/commands (QoS 1); for each command publishes {"id", "status": "succeeded",
"payload": {"echo": <name>}} to devices/{id}/results (QoS 1).
Lines:  READY | CMD <command json> | RESULT <id> | LOST <reason> | TIMEOUT
"""
import argparse
import json
import sys
import threading

import paho.mqtt.client as mqtt

lock = threading.Lock()


def out(*parts):
    with lock:
        print(*parts, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--id", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--keepalive", type=int, required=True, help="MQTT keep-alive in seconds (PINGREQ when idle this long)")
    p.add_argument("--timeout", type=float, default=240)
    a = p.parse_args()

    client = mqtt.Client(client_id=a.id, protocol=mqtt.MQTTv5)
    client.username_pw_set(a.id, a.secret)
    topic = "devices/%s/commands" % a.id
    results = "devices/%s/results" % a.id
    ended = threading.Event()

    def on_connect(c, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        if code != 0:
            out("LOST", "connack", code)
            ended.set()
            return
        c.subscribe(topic, qos=1)

    def on_subscribe(c, userdata, mid, granted, properties=None):
        out("READY")

    def on_message(c, userdata, msg):
        body = json.loads(msg.payload.decode("utf-8"))
        out("CMD", json.dumps(body, separators=(",", ":")))
        result = {"id": body["id"], "status": "succeeded", "payload": {"echo": body["name"]}}
        c.publish(results, json.dumps(result), qos=1)

    def on_publish(c, userdata, mid):
        out("RESULT", mid)

    def on_disconnect(c, userdata, rc, properties=None):
        out("LOST", "disconnect", rc)
        ended.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect(a.host, a.port, keepalive=a.keepalive)
    client.loop_start()
    if not ended.wait(a.timeout):
        out("TIMEOUT")
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
