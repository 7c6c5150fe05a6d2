#!/usr/bin/env python3
"""A plain MQTT lamp or fan controller: only paho-mqtt and the standard library, no platform code.

* connect with the username/password the platform issued; Last Will `offline` (retained) on
  aiot/dev/<device-id>/presence, then `online`;
* subscribe (QoS 1) to aiot/dev/<device-id>/cmd, where commands arrive as
  {"cmd_id": "...", "command": "set_speed", "args": {"speed": 2}, "ts": ...};
* after each command publish the full new state on aiot/dev/<device-id>/state with the same cmd_id:
  {"cmd_id": "...", "ts": <epoch>, "state": {...}, "error": null}   (error set when the command was refused).

Commands and state follow the sample types examples/device-types/lamp.json and fan.json:
lamp: on, off -> state {power}; fan: on, off, set_speed {speed: 0..3} -> state {power, speed}.

    python plain_mqtt_controller.py --kind lamp --host 127.0.0.1 --port 1883 --username dev_x --password ... \
        --device-id dev_x
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt


def apply(kind: str, state: dict, command: str, args: dict) -> str | None:
    """Change `state` in place; return an error text for a command this device cannot run."""
    if not isinstance(args, dict):
        return "args must be an object"
    if command in ("on", "off"):
        state["power"] = command == "on"
        if kind == "fan":
            state["speed"] = max(state["speed"], 1) if state["power"] else 0
        return None
    if kind == "fan" and command == "set_speed":
        speed = args.get("speed")
        if isinstance(speed, bool) or not isinstance(speed, int) or not 0 <= speed <= 3:
            return "set_speed needs args.speed, an integer 0..3"
        state.update(speed=speed, power=speed > 0)
        return None
    return f"unknown command {command!r}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["lamp", "fan"], default="lamp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--duration", type=float, default=0, help="exit after this many seconds (0: until killed)")
    args = p.parse_args(argv)

    base = f"aiot/dev/{args.device_id}"
    state = {"power": False} if args.kind == "lamp" else {"power": False, "speed": 0}
    ready = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def report(client, cmd_id=None, error=None):
        body = {"cmd_id": cmd_id, "ts": round(time.time(), 3), "state": state, "error": error}
        client.publish(f"{base}/state", json.dumps(body), qos=1)

    def on_connect(client, userdata, flags, reason_code, properties=None):
        if reason_code != 0:
            print(f"connect refused: {reason_code}", file=sys.stderr, flush=True)
            stop.set()
            return
        client.publish(f"{base}/presence", "online", qos=1, retain=True)
        client.subscribe(f"{base}/cmd", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties=None):
        if any(rc.is_failure for rc in reason_codes):
            print(f"subscribe refused: {reason_codes}", file=sys.stderr, flush=True)
            stop.set()
            return
        report(client)
        ready.set()

    def on_message(client, userdata, msg):
        try:
            cmd = json.loads(msg.payload)
            cmd_id = cmd["cmd_id"]
            command = cmd["command"]
        except (ValueError, KeyError, TypeError):
            print(f"ignored malformed command: {msg.payload[:100]!r}", file=sys.stderr, flush=True)
            return
        error = apply(args.kind, state, command, cmd.get("args") or {})
        print(f"command {cmd_id} {command} -> {state} error={error}", flush=True)
        report(client, cmd_id, error)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.device_id)
    client.username_pw_set(args.username, args.password)
    client.will_set(f"{base}/presence", "offline", qos=1, retain=True)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not ready.wait(10) or stop.is_set():
        print("could not connect and subscribe", file=sys.stderr, flush=True)
        client.loop_stop()
        return 2
    print("ready", flush=True)
    stop.wait(args.duration or None)
    client.publish(f"{base}/presence", "offline", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
