"""What a schedule means, as pure functions: a `ScheduleSpec` and the UTC runs (`occurrences`) it yields.

No I/O and no clock of its own (the caller passes "now"), so every rule here is testable in microseconds and the
service, the API preview and the UI all compute the very same runs.

Local times are wall-clock times in the schedule's IANA time zone, resolved with `zoneinfo`. Two daylight-saving
cases have no single obvious answer; the choices made here are:

- A local time that does not exist (it falls in a spring-forward gap, e.g. 02:30 in New York on 2026-03-08) runs
  at the first valid instant after the gap (03:00 local, the moment clocks jump). Several start times inside the
  same gap collapse into that one run.
- A local time that happens twice (fall-back, e.g. 01:30 in New York on 2026-11-01) runs once, at its first
  occurrence (`fold=0`, the earlier instant, still on summer time).

A run's length (`duration_minutes`) is elapsed real time; a daily end time (`until`) is a wall-clock time, the
first one after the start (so 22:00 until 06:00 crosses midnight), resolved with the same two rules.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_STARTS_PER_DAY = 144  # every 10 minutes; more is a loop, not a schedule
MAX_RUN_MINUTES = 24 * 60
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class SpecError(ValueError):
    """A schedule rule broken by a combination of fields; `field` names the one to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_hhmm(value: Any, field: str) -> time:
    """'HH:MM' (24 h, local) -> time; anything else is an error naming `field`."""
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    if not isinstance(value, str) or not _HHMM.match(value.strip()):
        raise SpecError(field, f"expected a local time as 'HH:MM' (00:00-23:59), got {value!r}")
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes))


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M:%S") if value.second else value.strftime("%H:%M")


class EveryDay(BaseModel):
    """'`count` times a day between `start` and `end`': evenly spaced, the first at `start`, the last at `end`
    (when count > 1)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_STARTS_PER_DAY, description="runs per day")
    start: str = Field(description="local 'HH:MM' of the first run")
    end: str = Field(description="local 'HH:MM' of the last run (same day, after start)")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str, info: ValidationInfo) -> str:
        return _hhmm(parse_hhmm(value, f"every_day.{info.field_name}"))

    @model_validator(mode="after")
    def _window(self) -> EveryDay:
        if parse_hhmm(self.end, "every_day.end") <= parse_hhmm(self.start, "every_day.start"):
            raise SpecError(
                "every_day.end",
                f"the window end {self.end} must be after its start {self.start} (the window lies within one day)",
            )
        return self

    def local_times(self) -> list[time]:
        first = parse_hhmm(self.start, "every_day.start")
        last = parse_hhmm(self.end, "every_day.end")
        if self.count == 1:
            return [first]
        span = (last.hour * 3600 + last.minute * 60) - (first.hour * 3600 + first.minute * 60)
        base = first.hour * 3600 + first.minute * 60
        out = []
        for k in range(self.count):
            seconds = base + round(span * k / (self.count - 1))
            out.append(time(seconds // 3600, seconds % 3600 // 60, seconds % 60))
        return out


class ScheduleSpec(BaseModel):
    """When an app instance runs. Validate new specs with `parse_spec` (it checks the end date against today in
    the schedule's zone); stored specs are re-read with `ScheduleSpec.stored(...)`, which skips that check."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(description="IANA time zone of the times and dates, e.g. 'Asia/Kolkata'")
    start_date: date = Field(description="first local day (inclusive)")
    end_date: date = Field(description="last local day (inclusive); not in the past")
    times: list[str] | None = Field(None, description="local start times 'HH:MM'")
    every_day: EveryDay | None = Field(None, description="N evenly spaced starts a day within a window")
    duration_minutes: int | None = Field(None, ge=1, le=MAX_RUN_MINUTES, description="run length, real minutes")
    until: str | None = Field(None, description="local 'HH:MM' a run ends at (the first one after its start)")
    weekdays: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), description="local days it runs on")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SpecError("timezone", f"unknown IANA time zone {value!r} (e.g. 'Europe/Paris', 'UTC')") from exc
        return value

    @field_validator("times")
    @classmethod
    def _times(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise SpecError("times", "give at least one start time, or use every_day")
        if len(value) > MAX_STARTS_PER_DAY:
            raise SpecError("times", f"at most {MAX_STARTS_PER_DAY} start times a day")
        parsed = [parse_hhmm(v, f"times.{i}") for i, v in enumerate(value)]
        if len(set(parsed)) != len(parsed):
            raise SpecError("times", "a start time is listed twice")
        return [_hhmm(t) for t in sorted(parsed)]

    @field_validator("until")
    @classmethod
    def _until(cls, value: str | None) -> str | None:
        return None if value is None else _hhmm(parse_hhmm(value, "until"))

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[str]) -> list[str]:
        if not value:
            raise SpecError("weekdays", "choose at least one day (mon..sun)")
        return [d for d in WEEKDAYS if d in set(value)]

    @field_validator("end_date")
    @classmethod
    def _not_past(cls, value: date, info: ValidationInfo) -> date:
        context = info.context or {}
        if context.get("stored"):
            return value
        now: datetime = context.get("now") or datetime.now(UTC)
        zone = info.data.get("timezone")
        today = now.astimezone(ZoneInfo(zone)).date() if zone else now.date()
        if value < today:
            raise SpecError("end_date", f"{value} is in the past (today is {today} in {zone or 'UTC'})")
        return value

    @model_validator(mode="after")
    def _combination(self) -> ScheduleSpec:
        if self.start_date > self.end_date:
            raise SpecError("start_date", f"{self.start_date} is after the end date {self.end_date}")
        if (self.times is None) == (self.every_day is None):
            raise SpecError("times", "give either times (a list of 'HH:MM') or every_day, not both or neither")
        if (self.duration_minutes is None) == (self.until is None):
            raise SpecError(
                "duration_minutes",
                "give either duration_minutes (run length) or until (daily end time), not both or neither",
            )
        if self.until is not None:
            until = parse_hhmm(self.until, "until")
            if until in self.local_times():
                raise SpecError("until", f"{self.until} is also a start time: a run would last 0 or 24 hours")
        return self

    @classmethod
    def stored(cls, data: dict[str, Any]) -> ScheduleSpec:
        """Re-read a spec saved earlier (its end date may have passed since)."""
        return cls.model_validate(data, context={"stored": True})

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_times(self) -> list[time]:
        if self.every_day is not None:
            return self.every_day.local_times()
        return [parse_hhmm(t, "times") for t in self.times or []]


def error_field(exc: ValidationError) -> tuple[str, str]:
    """The field to blame and a message for a failed `ScheduleSpec` validation (first problem)."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):
        return cause.field, cause.message
    field = ".".join(str(p) for p in err.get("loc", ())) or "spec"
    return field, err.get("msg", "invalid value")


def parse_spec(data: Any, now: datetime | None = None) -> ScheduleSpec:
    """Validate a new spec; raise `SpecError` naming the field (end date checked against `now`, default: now)."""
    try:
        return ScheduleSpec.model_validate(data, context={"now": now} if now else None)
    except ValidationError as exc:
        field, message = error_field(exc)
        raise SpecError(field, message) from exc


# ---------------------------------------------------------------------- resolving local times


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def resolve_local(day: date, clock: time, zone: tzinfo) -> datetime:
    """The UTC instant of local `day` `clock` in `zone`, by the module's two DST rules (see the docstring)."""
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == naive:
        return first  # exists (and, when ambiguous, fold=0 is its first occurrence)
    # In a gap: fold=0 and fold=1 bracket the transition; the first valid instant is the smallest one whose wall
    # time is at or past `naive`. Search it to the second (a gap is at most a few hours wide).
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = int(min(first, second).timestamp()), int(max(first, second).timestamp())
    while high - low > 1:  # invariant: wall(low) < naive <= wall(high)
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= naive:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def is_nonexistent(day: date, clock: time, zone: tzinfo) -> bool:
    naive = datetime.combine(day, clock)
    return _wall(naive.replace(tzinfo=zone).astimezone(UTC), zone) != naive


def is_ambiguous(day: date, clock: time, zone: tzinfo) -> bool:
    naive = datetime.combine(day, clock)
    return (
        not is_nonexistent(day, clock, zone)
        and naive.replace(tzinfo=zone, fold=0).utcoffset() != naive.replace(tzinfo=zone, fold=1).utcoffset()
    )


def _run_end(spec: ScheduleSpec, day: date, clock: time, start: datetime) -> datetime:
    if spec.duration_minutes is not None:
        return start + timedelta(minutes=spec.duration_minutes)
    until = parse_hhmm(spec.until, "until")
    end_day = day if until > clock else day + timedelta(days=1)
    end = resolve_local(end_day, until, spec.zone)
    return end if end > start else start + timedelta(minutes=1)  # both ends squeezed into one DST gap


def occurrences(spec: ScheduleSpec, start_utc: datetime, end_utc: datetime) -> list[tuple[datetime, datetime]]:
    """Runs (start, end) in UTC whose start lies in [start_utc, end_utc), sorted, one per distinct start."""
    if start_utc.tzinfo is None or end_utc.tzinfo is None:
        raise ValueError("occurrences() needs aware datetimes (UTC)")
    zone = spec.zone
    first_day = max(spec.start_date, start_utc.astimezone(zone).date() - timedelta(days=1))
    last_day = min(spec.end_date, end_utc.astimezone(zone).date() + timedelta(days=1))
    days = set(spec.weekdays)
    clocks = spec.local_times()
    found: dict[datetime, datetime] = {}
    day = first_day
    while day <= last_day:
        if WEEKDAYS[day.weekday()] in days:
            for clock in clocks:
                start = resolve_local(day, clock, zone)
                if start_utc <= start < end_utc and start not in found:
                    found[start] = _run_end(spec, day, clock, start)
        day += timedelta(days=1)
    return sorted(found.items())


def next_occurrences(spec: ScheduleSpec, after_utc: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """The first `count` runs starting at or after `after_utc` (fewer when the end date comes first)."""
    out: list[tuple[datetime, datetime]] = []
    window = timedelta(days=7)
    cursor = after_utc
    stop = resolve_local(spec.end_date + timedelta(days=2), time(0), spec.zone)
    while len(out) < count and cursor < stop:
        out.extend(occurrences(spec, cursor, cursor + window))
        cursor += window
    return out[:count]
