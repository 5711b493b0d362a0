"""How each kind of device behaves: the signals it measures and the messages it sends.

Every device has its own random stream (``seed`` and device id), its own ``seq`` counter and a
firmware that fixes how it writes ``ts``: RFC 3339 with the +08:00 offset, or epoch
milliseconds, as mixed fleets do. Behaviour follows *simulated* local time (``sim``, epoch
seconds; the day may run faster than the wall clock), while ``ts`` is the *wall* time the
reading is sent, so the service never sees readings from the future.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Final, Literal

from ingest.topics import topic_for

TZ: Final = timezone(timedelta(hours=8), "CST")  # Lanzhou keeps Beijing time, no DST
TsStyle = Literal["rfc3339", "epoch_ms"]
# Hourly share of a gate's daily passages: morning 7-9 and evening 17-20 peaks.
GATE_PROFILE: Final = (
    0.3, 0.15, 0.1, 0.1, 0.15, 0.5, 1.5, 4.5, 5.5, 3.0, 2.5, 2.5,
    2.8, 2.5, 2.2, 2.3, 2.8, 4.5, 5.0, 4.2, 2.8, 1.8, 1.0, 0.6,
)  # fmt: skip
_PROFILE_PEAK: Final = max(GATE_PROFILE) / sum(GATE_PROFILE)
_METHODS: Final = (("face", 0.5), ("card", 0.3), ("qr", 0.12), ("pin", 0.08))
# Chance per reading that a resident is out walking, by hour.
_WALKING: Final = (
    0, 0, 0, 0, 0, 0.02, 0.08, 0.2, 0.25, 0.22, 0.18, 0.12,
    0.06, 0.05, 0.1, 0.18, 0.22, 0.2, 0.12, 0.08, 0.04, 0.01, 0, 0,
)  # fmt: skip
_MEALS: Final = frozenset({6, 7, 11, 12, 17, 18})
# Indoor temperature by month: heating runs mid-October to mid-March in Lanzhou.
_INDOOR_C: Final = (22.5, 22.5, 21.5, 19.5, 21.0, 25.0, 27.0, 26.5, 23.0, 20.5, 22.0, 22.5)


def hour_of(sim: float) -> float:
    """Local hour of day (0-24, fractional) of a simulated time."""
    return ((sim + 8 * 3600) % 86400) / 3600


def format_ts(wall: float, style: TsStyle) -> str | int:
    if style == "epoch_ms":
        return int(wall * 1000)
    return datetime.fromtimestamp(wall, TZ).isoformat(timespec="milliseconds")


def night_factor(hour: float) -> float:
    """1 at 03:00, 0 at 15:00: how deep in the night the body is."""
    return 0.5 * (1 + math.cos(2 * math.pi * (hour - 3) / 24))


@dataclass(eq=False)
class DeviceSim:
    """One device: identity, firmware, seq counter, random stream, and how to send."""

    KIND: ClassVar[str] = ""
    INTERVAL: ClassVar[float] = 300.0
    """Seconds between periodic telemetry, in simulated time."""

    community: str
    device_id: str
    rng: random.Random
    fw: str
    ts_style: TsStyle
    seq: int = 0
    last_sim: float | None = None

    def topic(self, stream: str) -> str:
        return topic_for(self.community, self.KIND, self.device_id, stream)

    def encode(self, fields: dict[str, Any], wall: float) -> bytes:
        """A payload with this device's ``ts`` and next ``seq``; advances the counter."""
        self.seq += 1
        body = {"ts": format_ts(wall, self.ts_style), "seq": self.seq, **fields}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def status(self, wall: float, state: str = "online") -> tuple[str, bytes]:
        return self.topic("status"), self.encode({"state": state, "fw": self.fw}, wall)

    def event(self, name: str, wall: float, **fields: Any) -> tuple[str, bytes]:
        return self.topic("event"), self.encode({"event": name, **fields}, wall)

    def telemetry(self, sim: float, wall: float) -> list[tuple[str, bytes]]:
        """Messages due at this periodic tick: telemetry, sometimes an event too."""
        dt = 0.0 if self.last_sim is None else max(0.0, sim - self.last_sim)
        self.last_sim = sim
        fields, events = self.sample(sim, dt)
        out = [self.event(e, wall) for e in events]
        out.append((self.topic("telemetry"), self.encode(fields, wall)))
        return out

    def sample(self, sim: float, dt: float) -> tuple[dict[str, Any], list[str]]:
        raise NotImplementedError


@dataclass(eq=False)
class WearableSim(DeviceSim):
    """A wrist wearable of an elderly resident: heart rate with a daily rhythm, SpO2, skin
    temperature, cumulative steps (mostly by day), a slowly draining battery, position."""

    KIND: ClassVar[str] = "wearable"
    INTERVAL: ClassVar[float] = 60.0

    resident_id: str = ""
    home: tuple[float, float] = (0.0, 0.0)
    hr_base: float = 72.0
    hr_sd: float = 3.0
    night_dip: float = 10.0
    spo2_base: float = 97.0
    spo2_floor: int = 92
    skin_base: float = 33.5
    steps: int = 0
    battery: float = 80.0
    forgets_charging: float = 0.03
    walking: bool = False
    offset_m: tuple[float, float] = (0.0, 0.0)
    _hr_noise: float = 0.0
    _low_sent: bool = False

    def sample(self, sim: float, dt: float) -> tuple[dict[str, Any], list[str]]:
        r, hour = self.rng, hour_of(sim)
        night = night_factor(hour)
        p_walk = _WALKING[int(hour)]
        self.walking = r.random() < (0.6 if self.walking and p_walk > 0 else p_walk)
        minutes = dt / 60
        if self.walking:
            self.steps += int(minutes * r.uniform(45, 95))
            east, north = self.offset_m
            east, north = east + r.gauss(0, 40), north + r.gauss(0, 40)
            scale = min(1.0, 250 / max(1.0, math.hypot(east, north)))
            self.offset_m = (east * scale, north * scale)
        else:
            self.steps += int(minutes * r.uniform(0, 4) * (1 - night))
            self.offset_m = (self.offset_m[0] * 0.5, self.offset_m[1] * 0.5)
        self._hr_noise = 0.6 * self._hr_noise + r.gauss(0, self.hr_sd)
        hr = self.hr_base - self.night_dip * night + self._hr_noise
        hr += r.uniform(12, 20) if self.walking else 0
        spo2 = round(self.spo2_base - 0.8 * night + r.gauss(0, 0.6))
        skin = self.skin_base + 0.5 * night + (0.3 if self.walking else 0) + r.gauss(0, 0.15)
        events = self._battery(sim, dt)
        lat = self.home[0] + self.offset_m[1] / 111_320
        lon = self.home[1] + self.offset_m[0] / (111_320 * math.cos(math.radians(self.home[0])))
        fields = {
            "heart_rate": int(min(180, max(40, round(hr)))),
            "spo2": min(100, max(self.spo2_floor, spo2)),
            "skin_temp_c": round(min(37.5, max(31.0, skin)), 1),
            "steps": self.steps,
            "battery": int(self.battery),
            "worn": True,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
        }
        return fields, events

    def _battery(self, sim: float, dt: float) -> list[str]:
        before = hour_of(sim - dt)
        self.battery = max(1.0, self.battery - 0.45 * dt / 3600)
        # Charged on the dock during the evening news, unless forgotten.
        evening = dt > 0 and before < 20 <= hour_of(sim)
        if evening and self.battery < 40 and self.rng.random() > self.forgets_charging:
            self.battery, self._low_sent = 100.0, False
        if self.battery < 15 and not self._low_sent:
            self._low_sent = True
            return ["low_battery"]
        return []


@dataclass(eq=False)
class SmokeSim(DeviceSim):
    """A household's photoelectric smoke detector with a temperature and CO sensor."""

    KIND: ClassVar[str] = "smoke"
    INTERVAL: ClassVar[float] = 300.0

    unit: str = ""
    obscuration_base: float = 0.03
    temp_offset: float = 0.0
    gas_stove: bool = True
    battery: float = 90.0
    _low_sent: bool = False

    def sample(self, sim: float, dt: float) -> tuple[dict[str, Any], list[str]]:
        r, hour = self.rng, hour_of(sim)
        month = datetime.fromtimestamp(sim, TZ).month
        cooking = int(hour) in _MEALS and r.random() < 0.2
        obscuration = self.obscuration_base + abs(r.gauss(0, 0.008))
        co = max(0.0, r.gauss(0.8, 0.5))
        if cooking:
            obscuration += r.uniform(0.03, 0.25)
            co += r.uniform(2, 12) if self.gas_stove else 0
        temp = _INDOOR_C[month - 1] + self.temp_offset
        temp += 1.2 * math.sin(2 * math.pi * (hour - 9) / 24) + r.gauss(0, 0.2)
        temp += r.uniform(0.5, 2) if cooking else 0
        self.battery = max(0.0, self.battery - 0.0006 * dt / 3600)
        events = []
        if self.battery < 20 and not self._low_sent:
            self._low_sent = True
            events.append("low_battery")
        fields = {
            "obscuration_pct_m": round(obscuration, 3),
            "temperature_c": round(temp, 1),
            "co_ppm": round(co, 1),
            "battery": int(self.battery),
        }
        return fields, events


@dataclass(eq=False)
class GateSim(DeviceSim):
    """An access gate: passages by face, card, QR or PIN with daily peaks, a few denied, and a
    heartbeat telemetry message every five minutes."""

    KIND: ClassVar[str] = "gate"
    INTERVAL: ClassVar[float] = 300.0

    daily_passages: float = 1000.0
    credential_scope: tuple[str, ...] = ()
    """Buildings whose residents' credentials open this gate."""
    people_per_building: int = 100
    denied_share: float = 0.025
    booted_sim: float = 0.0

    def sample(self, sim: float, dt: float) -> tuple[dict[str, Any], list[str]]:
        if not self.booted_sim:
            self.booted_sim = sim - self.rng.uniform(3600, 30 * 86400)
        return {"uptime_s": int(sim - self.booted_sim)}, []

    def rate(self, sim: float) -> float:
        """Expected passages per simulated second at this time of day."""
        return self.daily_passages * GATE_PROFILE[int(hour_of(sim))] / sum(GATE_PROFILE) / 3600

    def next_passage(self, sim: float) -> float:
        """Simulated time of the next passage after ``sim`` (Poisson with daily profile)."""
        peak = self.daily_passages * _PROFILE_PEAK / 3600
        t = sim
        while True:
            t += self.rng.expovariate(peak)
            if self.rng.random() * peak <= self.rate(t):
                return t

    def passage(self, sim: float, wall: float) -> tuple[str, bytes]:
        r, hour = self.rng, hour_of(sim)
        out_share = 0.7 if 6 <= hour < 10 else 0.3 if 16 <= hour < 21 else 0.5
        direction = "out" if r.random() < out_share else "in"
        method = r.choices([m for m, _ in _METHODS], [w for _, w in _METHODS])[0]
        if r.random() < self.denied_share:
            credential = f"{r.getrandbits(40):010x}"  # unknown, expired or a stranger's
            return self.event(
                "denied", wall, direction=direction, method=method, credential=credential
            )
        if method == "qr":
            credential = f"v{r.getrandbits(36):09x}"  # a visitor's one-day pass
        else:
            building = r.choice(self.credential_scope) if self.credential_scope else "-"
            credential = credential_of(
                self.community, building, r.randrange(self.people_per_building)
            )
        return self.event(
            "granted", wall, direction=direction, method=method, credential=credential
        )


def credential_of(community: str, building: str, person: int) -> str:
    """The opaque credential id of a resident's card or face template."""
    text = f"{community}:{building}:{person}".encode()
    return hashlib.blake2b(text, digest_size=5).hexdigest()


@dataclass
class Clock:
    """Maps wall time to simulated time: ``sim = sim_start + (wall - wall_start) * speed``."""

    wall_start: float
    sim_start: float
    speed: float = 1.0

    def sim(self, wall: float) -> float:
        return self.sim_start + (wall - self.wall_start) * self.speed

    def wall(self, sim: float) -> float:
        return self.wall_start + (sim - self.sim_start) / self.speed
