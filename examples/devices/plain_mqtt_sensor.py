#!/usr/bin/env python3
"""A plain MQTT temperature sensor: only paho-mqtt and the standard library, no platform code.

It is what a vendor's device firmware does, to prove such devices work with the platform unchanged:

* connect with the username/password the platform issued for this device;
* set a Last Will: `offline` (retained) on aiot/dev/<device-id>/presence, then publish `online` (retained);
* publish one JSON reading per interval on aiot/dev/<device-id>/data:
  {"ts": <epoch seconds>, "temperature": <°C>}   (the sample type examples/device-types/temperature.json)

    python plain_mqtt_sensor.py --host 127.0.0.1 --port 1883 --username dev_x --password ... --device-id dev_x
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    p.add_argument("--count", type=int, default=0, help="stop after this many readings (0: run until killed)")
    p.add_argument("--base", type=float, default=22.0, help="mean temperature in °C")
    args = p.parse_args(argv)

    base = f"aiot/dev/{args.device_id}"
    connected = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def on_connect(client, userdata, flags, reason_code, properties=None):
        if reason_code != 0:
            print(f"connect refused: {reason_code}", file=sys.stderr, flush=True)
            stop.set()
            return
        client.publish(f"{base}/presence", "online", qos=1, retain=True)
        connected.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.device_id)
    client.username_pw_set(args.username, args.password)
    client.will_set(f"{base}/presence", "offline", qos=1, retain=True)
    client.on_connect = on_connect
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(10) or stop.is_set():
        print("could not connect", file=sys.stderr, flush=True)
        client.loop_stop()
        return 2
    print("ready", flush=True)

    sent = 0
    while not stop.is_set() and (args.count == 0 or sent < args.count):
        now = time.time()
        hour = time.localtime(now).tm_hour + time.localtime(now).tm_min / 60
        temperature = args.base + 3 * math.sin(2 * math.pi * (hour - 9) / 24) + random.gauss(0, 0.2)
        reading = {"ts": round(now, 3), "temperature": round(temperature, 2)}
        client.publish(f"{base}/data", json.dumps(reading), qos=1).wait_for_publish(5)
        sent += 1
        stop.wait(args.interval)

    client.publish(f"{base}/presence", "offline", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
