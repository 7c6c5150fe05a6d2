from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.live import LivePlatform, live_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LivePlatform]:
    async with live_platform(tmp_path) as platform:
        yield platform
