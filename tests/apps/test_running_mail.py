"""The "app running" e-mail says when the instance stops in its location's local time (what the end user planned
by), with UTC beside it; before, it gave only an ISO time in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from aiot.apps.service import until_text


def test_the_stop_time_is_in_the_locations_zone_with_utc_beside() -> None:
    end = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    assert (
        until_text(end, "Asia/Kolkata")
        == "It runs until 2026-12-04 15:00 Asia/Kolkata time (IST; 2026-12-04 09:30 UTC)."
    )
    assert until_text(datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "Europe/Paris").startswith(
        "It runs until 2026-07-01 14:00 Europe/Paris time (CEST;"
    )  # summer time applied
    assert until_text(None, "Asia/Kolkata") == "It runs until you stop it."
    assert "UTC time" in until_text(end, "Not/AZone")  # a bad zone on record still gives a usable mail
