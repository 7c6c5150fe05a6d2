"""Sensor simulators: each turns "now" into one payload. Pure functions of time plus seeded noise, so tests
can drive them without a bus, and the runner only schedules them.

Day curves (light, temperature) follow the *location's* local time (a zoneinfo name), because a classroom in
Kolkata is bright when one in Lima is dark.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiot.bus import codec


def _local_hour(now: datetime, tz: ZoneInfo) -> float:
    local = now.astimezone(tz)
    return local.hour + local.minute / 60 + local.second / 3600


class SensorSim:
    """Base: `payload(now)` -> bytes for the data subject; `rate` is readings per second."""

    type_name = ""

    def __init__(self, device_id: str, *, rate: float = 1.0, tz: str = "UTC", seed: int | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 readings/s, got {rate}")
        self.device_id = device_id
        self.rate = rate
        self.tz = ZoneInfo(tz)
        self.rng = random.Random(seed if seed is not None else device_id)

    def payload(self, now: datetime | None = None) -> bytes:
        raise NotImplementedError


class LightSim(SensorSim):
    """Illuminance in lux: a daylight half-sine between sunrise and sunset local time, scaled by `indoor`
    (a window-lit room gets a fraction of outdoor light) plus multiplicative noise."""

    type_name = "light"

    def __init__(
        self,
        device_id: str,
        *,
        peak_lux: float = 20_000.0,
        indoor: float = 0.05,
        sunrise: float = 6.0,
        sunset: float = 18.5,
        night_lux: float = 2.0,
        **kw: object,
    ) -> None:
        super().__init__(device_id, **kw)  # type: ignore[arg-type]
        self.peak_lux, self.indoor, self.sunrise, self.sunset, self.night_lux = (
            peak_lux,
            indoor,
            sunrise,
            sunset,
            night_lux,
        )

    def value(self, now: datetime) -> float:
        h = _local_hour(now, self.tz)
        day = 0.0
        if self.sunrise < h < self.sunset:
            day = math.sin(math.pi * (h - self.sunrise) / (self.sunset - self.sunrise))
        lux = self.night_lux + self.peak_lux * self.indoor * day
        return round(min(100_000.0, max(0.0, lux * (1 + self.rng.gauss(0, 0.03)))), 1)

    def payload(self, now: datetime | None = None) -> bytes:
        now = now or datetime.now(UTC)
        return codec.encode_reading({"illuminance": self.value(now)}, now)


class TemperatureSim(SensorSim):
    """Temperature: daily sine (coolest ~03:00, warmest ~15:00 local) + Gaussian noise + a slow bounded random
    drift + an external override (`heat_up`) tests use to make a room hot now."""

    type_name = "temperature"

    def __init__(
        self,
        device_id: str,
        *,
        mean: float = 24.0,
        amplitude: float = 4.0,
        noise: float = 0.15,
        drift_step: float = 0.01,
        drift_limit: float = 1.5,
        **kw: object,
    ) -> None:
        super().__init__(device_id, **kw)  # type: ignore[arg-type]
        self.mean, self.amplitude, self.noise = mean, amplitude, noise
        self.drift_step, self.drift_limit = drift_step, drift_limit
        self.drift = 0.0
        self.offset = 0.0

    def heat_up(self, delta_c: float) -> None:
        """Add `delta_c` degrees to every following reading (0 resets): the room got hot / was cooled."""
        self.offset = float(delta_c)

    def value(self, now: datetime) -> float:
        h = _local_hour(now, self.tz)
        self.drift = max(-self.drift_limit, min(self.drift_limit, self.drift + self.rng.gauss(0, self.drift_step)))
        daily = self.amplitude * math.sin(2 * math.pi * (h - 9.0) / 24.0)
        temp = self.mean + daily + self.drift + self.offset + self.rng.gauss(0, self.noise)
        return round(max(-40.0, min(85.0, temp)), 2)

    def payload(self, now: datetime | None = None) -> bytes:
        now = now or datetime.now(UTC)
        return codec.encode_reading({"temperature": self.value(now)}, now)


# Images that ship inside scikit-image (no download at run time): one with a human face, two without.
FACE_IMAGES = ("astronaut",)
EMPTY_IMAGES = ("coffee", "chelsea")
_JPEG_CACHE: dict[tuple[str, int], tuple[bytes, int, int]] = {}


def scene_jpeg(name: str, width: int = 320) -> tuple[bytes, int, int]:
    """JPEG bytes (and size) of a packaged scikit-image picture scaled to `width`, encoded once per process."""
    key = (name, width)
    if key not in _JPEG_CACHE:
        import cv2
        import skimage.data

        rgb = getattr(skimage.data, name)()
        h, w = rgb.shape[:2]
        height = max(1, round(h * width / w))
        small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError(f"could not encode scene {name!r}")
        _JPEG_CACHE[key] = (buf.tobytes(), width, height)
    return _JPEG_CACHE[key]


class CameraSim(SensorSim):
    """JPEG frames of packaged pictures. `scene`: "face" (someone is there), "empty", or "mixed" (a face in
    `face_ratio` of frames, chosen at random). Tests flip `scene` to make an intruder appear."""

    type_name = "camera"

    def __init__(
        self, device_id: str, *, scene: str = "mixed", face_ratio: float = 0.3, width: int = 640, **kw: object
    ) -> None:
        kw.setdefault("rate", 1.0)
        super().__init__(device_id, **kw)  # type: ignore[arg-type]
        self.scene, self.face_ratio, self.width = scene, face_ratio, width
        self.frames = 0

    def next_image(self) -> str:
        if self.scene == "face":
            return self.rng.choice(FACE_IMAGES)
        if self.scene == "empty":
            return self.rng.choice(EMPTY_IMAGES)
        if self.scene != "mixed":
            raise ValueError(f"scene must be face, empty or mixed, got {self.scene!r}")
        return self.rng.choice(FACE_IMAGES if self.rng.random() < self.face_ratio else EMPTY_IMAGES)

    def payload(self, now: datetime | None = None) -> bytes:
        data, w, h = scene_jpeg(self.next_image(), self.width)
        self.frames += 1
        return codec.encode_frame(data, "jpeg", ts=now or datetime.now(UTC), width=w, height=h)


SENSOR_SIMS: dict[str, type[SensorSim]] = {"light": LightSim, "temperature": TemperatureSim, "camera": CameraSim}
