"""Schedule rules: local times to UTC across time zones and daylight-saving changes, and every rejection naming
its field. Pure functions, no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from aiot.scheduler.rules import (
    ScheduleSpec,
    SpecError,
    is_ambiguous,
    is_nonexistent,
    next_occurrences,
    occurrences,
    parse_spec,
    resolve_local,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # "today" for the end-date check: before every date used below
NY = ZoneInfo("America/New_York")


def spec(**fields: object) -> ScheduleSpec:
    base: dict[str, object] = {
        "timezone": "UTC",
        "start_date": "2026-01-01",
        "end_date": "2026-12-31",
        "duration_minutes": 30,
    }
    base.update(fields)
    return parse_spec(base, NOW)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def starts(s: ScheduleSpec, start: datetime, end: datetime) -> list[datetime]:
    return [a for a, _ in occurrences(s, start, end)]


def test_daily_0900_kolkata_is_0330_utc() -> None:
    s = spec(timezone="Asia/Kolkata", times=["09:00"], start_date="2026-06-01", end_date="2026-06-05")
    runs = occurrences(s, utc(2026, 5, 1), utc(2026, 7, 1))
    assert [a for a, _ in runs] == [utc(2026, 6, d, 3, 30) for d in range(1, 6)]
    assert all(b - a == timedelta(minutes=30) for a, b in runs)


def test_0830_new_york_across_both_dst_changes_of_2026() -> None:
    s = spec(timezone="America/New_York", times=["08:30"], start_date="2026-03-06", end_date="2026-11-03")
    got = {a.date(): a for a in starts(s, utc(2026, 3, 1), utc(2026, 12, 1))}
    # winter (EST, UTC-5) before March 8, summer (EDT, UTC-4) from it, winter again from November 1
    assert got[date(2026, 3, 6)] == utc(2026, 3, 6, 13, 30)
    assert got[date(2026, 3, 7)] == utc(2026, 3, 7, 13, 30)
    assert got[date(2026, 3, 8)] == utc(2026, 3, 8, 12, 30)
    assert got[date(2026, 7, 4)] == utc(2026, 7, 4, 12, 30)
    assert got[date(2026, 10, 31)] == utc(2026, 10, 31, 12, 30)
    assert got[date(2026, 11, 1)] == utc(2026, 11, 1, 13, 30)
    assert got[date(2026, 11, 3)] == utc(2026, 11, 3, 13, 30)
    assert len(got) == (date(2026, 11, 3) - date(2026, 3, 6)).days + 1  # one run every day, none doubled
    assert all(a.astimezone(NY).time() == time(8, 30) for a in got.values())


def test_three_times_a_day_between_0800_and_2000() -> None:
    s = spec(
        every_day={"count": 3, "start": "08:00", "end": "20:00"},
        timezone="Europe/Paris",
        start_date="2026-02-10",
        end_date="2026-02-10",
    )
    local = [a.astimezone(ZoneInfo("Europe/Paris")).time() for a in starts(s, utc(2026, 2, 9), utc(2026, 2, 12))]
    assert local == [time(8), time(14), time(20)]


def test_every_day_spacing_and_single_run() -> None:
    assert spec(every_day={"count": 5, "start": "08:00", "end": "09:00"}).every_day.local_times() == [
        time(8),
        time(8, 15),
        time(8, 30),
        time(8, 45),
        time(9),
    ]
    assert spec(every_day={"count": 1, "start": "07:10", "end": "09:00"}).every_day.local_times() == [time(7, 10)]


def test_weekdays_only() -> None:
    s = spec(times=["10:00"], weekdays=["mon", "wed", "fri"], start_date="2026-03-02", end_date="2026-03-15")
    days = [a.strftime("%a %d") for a in starts(s, utc(2026, 3, 1), utc(2026, 3, 20))]
    assert days == ["Mon 02", "Wed 04", "Fri 06", "Mon 09", "Wed 11", "Fri 13"]


def test_weekday_is_the_local_day_not_the_utc_day() -> None:
    # 07:00 Monday in Tokyo is 22:00 Sunday UTC.
    s = spec(timezone="Asia/Tokyo", times=["07:00"], weekdays=["mon"], start_date="2026-03-01", end_date="2026-03-10")
    assert starts(s, utc(2026, 3, 1), utc(2026, 3, 11)) == [utc(2026, 3, 1, 22), utc(2026, 3, 8, 22)]


def test_window_is_half_open_and_dates_inclusive() -> None:
    s = spec(times=["12:00"], start_date="2026-04-01", end_date="2026-04-03")
    assert starts(s, utc(2026, 4, 1, 12), utc(2026, 4, 3, 12)) == [utc(2026, 4, 1, 12), utc(2026, 4, 2, 12)]
    assert starts(s, utc(2026, 3, 1), utc(2026, 5, 1))[-1] == utc(2026, 4, 3, 12)


def test_end_date_in_the_past_is_rejected_naming_end_date() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(
            {
                "timezone": "UTC",
                "start_date": "2025-12-01",
                "end_date": "2025-12-31",
                "times": ["09:00"],
                "duration_minutes": 5,
            },
            NOW,
        )
    assert err.value.field == "end_date"
    assert "past" in err.value.message


def test_end_date_today_in_the_schedule_zone_is_accepted() -> None:
    # 2026-01-01 20:00 UTC is already January 2nd in Kolkata: Jan 1 is past there, but not in New York.
    now = utc(2026, 1, 1, 20)
    body = {"start_date": "2026-01-01", "end_date": "2026-01-01", "times": ["09:00"], "duration_minutes": 5}
    parse_spec({**body, "timezone": "America/New_York"}, now)
    with pytest.raises(SpecError, match="end_date"):
        parse_spec({**body, "timezone": "Asia/Kolkata"}, now)


def test_start_after_end_is_rejected_naming_start_date() -> None:
    with pytest.raises(SpecError) as err:
        spec(times=["09:00"], start_date="2026-05-02", end_date="2026-05-01")
    assert err.value.field == "start_date"


def test_stored_specs_may_have_ended() -> None:
    data = spec(times=["09:00"], end_date="2026-01-05").model_dump(mode="json")
    assert ScheduleSpec.stored(data).end_date == date(2026, 1, 5)  # re-read after the end date: fine
    with pytest.raises(SpecError):
        parse_spec(data, utc(2026, 2, 1))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus", "times": ["09:00"]}, "timezone"),
        ({"times": ["09:00", "24:00"]}, "times.1"),
        ({"times": ["9am"]}, "times.0"),
        ({"times": []}, "times"),
        ({"times": ["09:00", "09:00"]}, "times"),
        ({}, "times"),
        ({"times": ["09:00"], "every_day": {"count": 2, "start": "08:00", "end": "10:00"}}, "times"),
        ({"every_day": {"count": 2, "start": "10:00", "end": "08:00"}}, "every_day.end"),
        ({"every_day": {"count": 0, "start": "08:00", "end": "10:00"}}, "every_day.count"),
        ({"every_day": {"count": 2, "start": "8", "end": "10:00"}}, "every_day.start"),
        ({"times": ["09:00"], "duration_minutes": None}, "duration_minutes"),
        ({"times": ["09:00"], "until": "10:00"}, "duration_minutes"),
        ({"times": ["09:00"], "duration_minutes": 0}, "duration_minutes"),
        ({"times": ["09:00"], "duration_minutes": None, "until": "09:00"}, "until"),
        ({"times": ["09:00"], "duration_minutes": None, "until": "25:61"}, "until"),
        ({"times": ["09:00"], "weekdays": ["monday"]}, "weekdays.0"),
        ({"times": ["09:00"], "weekdays": []}, "weekdays"),
        ({"times": ["09:00"], "start_date": "2026-02-30"}, "start_date"),
        ({"times": ["09:00"], "colour": "red"}, "colour"),
    ],
)
def test_every_error_names_its_field(fields: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        spec(**fields)
    assert err.value.field == field, err.value
    assert str(err.value).startswith(field)


# ---------------------------------------------------------------------- daylight saving edge cases


def test_nonexistent_local_time_runs_at_the_first_instant_after_the_gap() -> None:
    day = date(2026, 3, 8)  # New York springs forward at 02:00 EST -> 03:00 EDT (07:00 UTC)
    assert is_nonexistent(day, time(2, 30), NY)
    assert resolve_local(day, time(2, 30), NY) == utc(2026, 3, 8, 7)
    s = spec(
        timezone="America/New_York", times=["02:15", "02:45", "04:00"], start_date="2026-03-07", end_date="2026-03-09"
    )
    got = starts(s, utc(2026, 3, 7), utc(2026, 3, 10))
    assert got == [
        utc(2026, 3, 7, 7, 15),
        utc(2026, 3, 7, 7, 45),
        utc(2026, 3, 7, 9),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 8),  # both gap times collapse into 03:00 EDT
        utc(2026, 3, 9, 6, 15),
        utc(2026, 3, 9, 6, 45),
        utc(2026, 3, 9, 8),
    ]


def test_ambiguous_local_time_runs_once_at_its_first_occurrence() -> None:
    day = date(2026, 11, 1)  # New York falls back at 02:00 EDT -> 01:00 EST: 01:30 happens twice
    assert is_ambiguous(day, time(1, 30), NY)
    s = spec(timezone="America/New_York", times=["01:30"], start_date="2026-10-31", end_date="2026-11-02")
    assert starts(s, utc(2026, 10, 30), utc(2026, 11, 5)) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT (fold=0), not also 06:30 UTC
        utc(2026, 11, 2, 6, 30),
    ]


def test_until_crosses_midnight_and_dst() -> None:
    s = spec(
        timezone="America/New_York",
        times=["22:00"],
        duration_minutes=None,
        until="06:00",
        start_date="2026-10-31",
        end_date="2026-10-31",
    )
    [(start, end)] = occurrences(s, utc(2026, 10, 30), utc(2026, 11, 3))
    assert start == utc(2026, 11, 1, 2)  # 22:00 EDT
    assert end == utc(2026, 11, 1, 11)  # 06:00 EST next morning: a 9-hour night (the clock fell back)


def test_duration_is_elapsed_time_across_the_gap() -> None:
    s = spec(
        timezone="America/New_York",
        times=["01:30"],
        duration_minutes=60,
        start_date="2026-03-08",
        end_date="2026-03-08",
    )
    [(start, end)] = occurrences(s, utc(2026, 3, 7), utc(2026, 3, 9))
    assert end - start == timedelta(hours=1)
    assert end.astimezone(NY).time() == time(3, 30)  # 01:30 EST + 1 h = 03:30 EDT


def test_next_occurrences_stops_at_the_end_date() -> None:
    s = spec(times=["06:00", "18:00"], start_date="2026-08-01", end_date="2026-08-03")
    got = next_occurrences(s, utc(2026, 8, 1, 12), 10)
    assert [a for a, _ in got] == [
        utc(2026, 8, 1, 18),
        utc(2026, 8, 2, 6),
        utc(2026, 8, 2, 18),
        utc(2026, 8, 3, 6),
        utc(2026, 8, 3, 18),
    ]
    assert len(next_occurrences(spec(times=["06:00"]), utc(2026, 3, 1), 3)) == 3


def test_occurrences_need_aware_datetimes() -> None:
    with pytest.raises(ValueError, match="aware"):
        occurrences(spec(times=["06:00"]), datetime(2026, 3, 1), datetime(2026, 3, 2))
