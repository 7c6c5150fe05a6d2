"""The import page: an AI developer imports an original-format model through the browser; a broken original
is shown by file and key first, and an end user cannot reach the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.artifacts.legacy.originals import model_files, to_zip
from tests.web.conftest import WebPlatform, shot
from tests.web.test_roles import no_console_errors

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(120)]


async def test_ai_developer_imports_an_original_model(web: WebPlatform, tmp_path: Path) -> None:
    page = await web.page_as("ai_developer")
    await page.goto("/import")
    broken = {k: v for k, v in model_files().items() if k != "postprocess.py"}
    await page.set_input_files("#f-file", str(to_zip(broken, tmp_path / "broken.zip")))
    await page.click("#import-form button[type=submit]")
    rows = await page.locator("#problems tbody tr").all_inner_texts()
    assert any("postprocess.py" in r and "postprocessing.name" in r for r in rows), rows

    await page.set_input_files("#f-file", str(to_zip(model_files(), tmp_path / "fan.zip")))
    await page.click("#import-form button[type=submit]")
    await page.wait_for_selector("#import-result")
    text = await page.inner_text("#import-result")
    assert "fan-advisor" in text and "unpickled only inside the model's sandbox" in text, text
    await shot(page, "ai-legacy-import")
    await page.context.close()
    no_console_errors(web)

    page = await web.page_as("end_user")
    response = await page.goto("/import")
    assert response is not None and response.status == 403
    await page.context.close()
    web.console_errors.clear()  # the browser logs the 403 asserted above as a failed load
