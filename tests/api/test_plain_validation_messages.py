"""Validation errors read like a person wrote them ("is required", "needs at least 3 characters"), not like
pydantic's parser ("String should have at least 3 characters"): forms show these messages next to the field."""

from __future__ import annotations

from pathlib import Path

from aiot.api.errors import plain_message
from aiot.store.models import Role
from tests.support.live import live_platform


def test_messages_by_error_type() -> None:
    assert plain_message({"type": "missing", "msg": "Field required"}) == "is required"
    assert plain_message({"type": "string_too_short", "input": "", "ctx": {"min_length": 2}}) == "is required"
    assert (
        plain_message({"type": "string_too_short", "input": "a", "ctx": {"min_length": 2}})
        == "needs at least 2 characters"
    )
    assert plain_message({"type": "less_than_equal", "ctx": {"le": 32}}) == "must be at most 32"
    assert plain_message({"type": "greater_than", "ctx": {"gt": 0}}) == "must be more than 0"
    assert plain_message({"type": "int_parsing"}) == "must be a whole number"
    assert plain_message({"type": "enum", "msg": "Input should be 'a' or 'b'"}) == "Input should be 'a' or 'b'"


async def test_the_api_answers_them(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        response = await live.client.post(
            "/api/v1/models/nope/deploy", json={"replicas": 0}, headers=live.headers(Role.ai_developer)
        )
        assert response.status_code == 422
        problems = {p["field"]: p["message"] for p in response.json()["error"]["details"]["problems"]}
        assert problems == {"replicas": "must be at least 1"}, problems
