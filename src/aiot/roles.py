"""The four kinds of people the platform knows, as a plain enum with no dependencies.

Why its own module: the CLI offers the roles as choices, and importing them from the database models cost every
`aiot` command a fifth of a second (SQLAlchemy) before it did anything. `aiot.store.models` re-exports it.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """The four kinds of people the seed names."""

    admin = "admin"  # the seed's "platform configurer"
    ai_developer = "ai_developer"
    app_developer = "app_developer"
    end_user = "end_user"
