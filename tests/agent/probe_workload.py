"""A tiny workload for the agent's tests: heartbeats like the SDK, and misbehaves on request.

Reads config.json (AIOT_WORKLOAD_CONFIG) like a real workload. Behaviour comes from `settings` in the config:
  mode "normal": heartbeat every interval for ever;
  mode "crash": print and exit 3 at once;
  mode "child": also start a child process (same group) that ignores SIGTERM;
  mode "failing": beat through the SDK's HeartbeatWriter with a callback failing on every beat, until a file
  named `recover` appears in the scratch dir;
  mode "probe": try to read/write the paths in settings.read / settings.write, list settings.list, print a JSON
  verdict (with its uids and capabilities), then run;
  settings.allocate_mb: allocate (and touch) that many MiB first.
A file named `hang` in the scratch dir (next to the heartbeat file) makes it stop heartbeating but stay alive
(it deletes the file first, so the restarted process heartbeats again).
"""

import json
import os
import resource
import subprocess
import sys
import time

with open(os.environ["AIOT_WORKLOAD_CONFIG"]) as config_file:
    config = json.load(config_file)
settings = config.get("settings") or {}
mode = settings.get("mode", "normal")
hb_file = config["heartbeat"]["file"]
interval = float(config["heartbeat"]["interval"])
scratch = os.path.dirname(hb_file)

print(f"probe started pid={os.getpid()} mode={mode}", flush=True)
print("probe stderr line", file=sys.stderr, flush=True)

if mode == "crash":
    sys.exit(3)
if settings.get("allocate_mb"):  # past a memory limit: the kernel (or RLIMIT_AS) must stop it
    hog = bytearray(b"\x01") * (int(settings["allocate_mb"]) << 20)
    print(f"allocated {len(hog) >> 20} MiB", flush=True)
if mode == "child":
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        ]
    )
if mode == "probe":
    verdict = {
        "env": sorted(os.environ),
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "uids": list(os.getresuid()),
        "gids": list(os.getresgid()),
        "groups": os.getgroups(),
    }
    with open("/proc/self/status") as fh:
        verdict["status"] = dict(line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line)
    for path in settings.get("list", []):
        try:
            verdict["ls " + path] = sorted(os.listdir(path))
        except OSError as exc:
            verdict["ls " + path] = f"denied:{type(exc).__name__}"
    for path in settings.get("read", []):
        try:
            with open(path) as fh:
                verdict[path] = "read:" + fh.read(20)
        except OSError as exc:
            verdict[path] = f"denied:{type(exc).__name__}"
    for path in settings.get("write", []):
        try:
            with open(path, "w") as fh:
                fh.write("x")
            verdict[path] = "written"
        except OSError as exc:
            verdict[path] = f"denied:{type(exc).__name__}"
    print("VERDICT " + json.dumps(verdict), flush=True)

if mode == "failing":
    from platform_sdk.heartbeat import CallbackHealth, HeartbeatWriter

    health = CallbackHealth()
    writer = HeartbeatWriter(config["workload_id"], hb_file, None, health)
    while True:
        if os.path.exists(os.path.join(scratch, "recover")):
            health.succeeded()
        else:
            try:
                raise ConnectionError("model comfort: no replica answered\n  a second line nobody needs")
            except ConnectionError as exc:
                health.failed(exc)
        writer.beat()
        time.sleep(interval)

while True:
    flag = os.path.join(scratch, "hang")
    if os.path.exists(flag):
        os.unlink(flag)
        print("hanging now", flush=True)
        while True:
            time.sleep(3600)
    tmp = hb_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(time.time()))
    os.replace(tmp, hb_file)
    time.sleep(interval)
