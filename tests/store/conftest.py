"""Fixtures shared with the other API-level folders (`tests/support/api_fixtures.py`)."""

from tests.support.api_fixtures import api, ctx, database, users  # noqa: F401 - fixtures for this folder
