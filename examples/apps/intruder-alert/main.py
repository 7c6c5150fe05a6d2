"""Intruder alert: camera frames -> face-detector model -> alarm and display controllers.

Runs as a script (entrypoint "main.py"). Every camera frame is sent to the detector; a face with a score of at
least `min_score` sounds the alarm and shows `message`. After `quiet_seconds` without a face both are reset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from platform_sdk import controller, get_logger, model_call, on_reading, run, settings

log = get_logger()
config = settings()
MIN_SCORE = float(config.get("min_score", 0.8))
QUIET_SECONDS = float(config.get("quiet_seconds", 30))
MESSAGE = str(config.get("message", "Intruder detected"))

alarm = controller("alarm")
display = controller("display")


@dataclass
class AlertState:
    """Whether the alarm sounds, and when a face was last seen (monotonic seconds)."""

    sounding: bool = False
    last_seen: float = 0.0


state = AlertState()


def faces_in(jpeg: bytes) -> list[dict]:
    """Ask the detector model for faces in a camera frame (JPEG bytes as sent); keep the confident ones."""
    result = model_call("detector", {"image": jpeg})
    return [face for face in result.get("faces", []) if face.get("score", 0.0) >= MIN_SCORE]


@on_reading("camera")
def on_frame(reading) -> None:
    faces = faces_in(reading.frame_bytes)
    now = time.monotonic()
    if faces:
        state.last_seen = now
        if not state.sounding:
            log.warning("%d face(s) seen by camera %s at %s: alarm on", len(faces), reading.device_id, reading.ts)
            alarm.send("on", reason=f"{len(faces)} face(s) seen by {reading.device_id}")
            display.send("show", text=MESSAGE, level="alert")
            state.sounding = True
    elif state.sounding and now - state.last_seen >= QUIET_SECONDS:
        log.info("no face for %.0f s: alarm off", QUIET_SECONDS)
        alarm.send("off")
        display.send("clear")
        state.sounding = False


if __name__ == "__main__":
    log.info("intruder alert watching (min_score=%.2f, quiet=%.0fs)", MIN_SCORE, QUIET_SECONDS)
    run()
