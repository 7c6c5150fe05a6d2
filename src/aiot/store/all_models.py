"""Imports every module that defines tables, so `Base.metadata` is complete (Alembic, tests)."""

from aiot.store import apps, catalog, devices, models, notify, rollouts, runtime, scheduling  # noqa: F401
from aiot.store.base import Base

metadata = Base.metadata
