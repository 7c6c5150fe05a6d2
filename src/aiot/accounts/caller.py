"""`Caller`: who asks, as the component rules need it (the API's `Principal.caller`).

The rules of who may see or change what (schedules, workloads, logs) need two facts about a person, their id and
whether they are an admin, not the HTTP request or the token; one type for all of them keeps the checks alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    user_id: str
    is_admin: bool  # admins see and manage everyone's things
