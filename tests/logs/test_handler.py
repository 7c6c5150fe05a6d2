"""The platform log handler: published to aiot.logs.platform.<service>, redacted, non-blocking and bounded."""

from __future__ import annotations

import logging
import threading

from aiot.logs.handler import PlatformLogHandler, install_platform_log_handler
from aiot.logs.redact import redact, redact_text
from tests.logs.conftest import LogsPlatform, wait_until

TOKEN = "aiot.tok_AbCdEf123456.Zx9-secretpart_Q"


def test_redaction_of_keys_tokens_and_urls() -> None:
    text = redact_text(
        f"login ok token={TOKEN} node aiotnode.nod_X1y2Z3.nodesecret join "
        "aiotjoin.njt_abc.joinsecret db postgresql://aiot:pgpass@db:5432/aiot "
        'password: "hunter2" Authorization: Bearer abc.def.ghi'
    )
    for secret in ("secretpart", "nodesecret", "joinsecret", "pgpass", "hunter2", "abc.def.ghi"):
        assert secret not in text, text
    assert "aiot.tok_AbCdEf123456.***" in text and "aiotnode.nod_X1y2Z3.***" in text
    assert redact({"password": "p", "nested": [{"api_key": 1}], "smtp_user": "mailer", "count": 3}) == {
        "password": "***",
        "nested": [{"api_key": "***"}],
        "smtp_user": "mailer",
        "count": 3,
    }
    assert redact_text("5 tokens were issued; passwords rotated") == "5 tokens were issued; passwords rotated"


async def test_records_reach_the_stream_redacted(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    raw: list[bytes] = []

    async def collect(msg: object) -> None:
        raw.append(msg.data)  # type: ignore[attr-defined]

    await p.bus.subscribe("aiot.logs.platform.>", collect)
    handler = install_platform_log_handler(p.bus, "api")
    logger = logging.getLogger("aiot.test.handler")
    try:
        logger.warning("user logged in with %s", TOKEN, extra={"password": "hunter2", "user": "alice"})
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            logger.exception("request failed")
        logger.debug("not shipped: below the handler level")
        await wait_until(lambda: len(raw) >= 2, 5, "two records on the bus")
    finally:
        await handler.aclose()
    assert logging.getLogger().handlers.count(handler) == 0
    assert all(b"secretpart" not in r and b"hunter2" not in r for r in raw), raw
    response = await p.search("admin1", service="api")
    records = response.json()["records"]
    assert [r["message"].splitlines()[0] for r in records] == [
        "request failed",
        "user logged in with aiot.tok_AbCdEf123456.***",
    ]
    first = records[1]
    assert first["level"] == "WARNING" and first["logger"] == "aiot.test.handler" and first["service"] == "api"
    assert first["extra"]["password"] == "***" and first["extra"]["user"] == "alice"
    assert "ValueError: bad token aiot.tok_AbCdEf123456.***" in records[0]["message"]


async def test_emit_never_blocks_and_counts_drops(logs_platform: LogsPlatform) -> None:
    handler = PlatformLogHandler(logs_platform.bus, "scheduler", capacity=5)  # not started: nothing drains
    logger = logging.getLogger("aiot.test.drops")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(12):
            logger.info("line %d", i)
    finally:
        logger.removeHandler(handler)
    assert handler.dropped == 7
    handler.start()
    await handler.aclose()
    assert handler.published == 5
    response = await logs_platform.search("admin1", service="scheduler")
    assert [r["message"] for r in response.json()["records"]] == [f"line {i}" for i in range(11, 6, -1)]


async def test_records_from_other_threads_are_shipped(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    handler = install_platform_log_handler(p.bus, "deployer")
    try:
        worker = threading.Thread(target=logging.getLogger("aiot.test.thread").warning, args=("from a thread",))
        worker.start()
        worker.join()
        await wait_until(lambda: handler.published >= 1, 5, "the thread's record to be published")
    finally:
        await handler.aclose()


async def test_http_client_request_lines_are_not_shipped(logs_platform: LogsPlatform) -> None:
    """The web UI calls the API in process through httpx, which logs every request at INFO: one line per page
    poll every 2 s drowned the platform's own log (522 of 676 lines)."""
    p = logs_platform
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    handler = install_platform_log_handler(p.bus, "web")
    try:
        await p.search("admin1", service="web")  # an httpx request made while the handler listens
        logging.getLogger("aiot.test.web").info("after the request")
        await wait_until(lambda: handler.published >= 1, 5, "the marker record to be published")
    finally:
        await handler.aclose()
        root.setLevel(level)
    records = (await p.search("admin1", service="web")).json()["records"]
    assert [r["logger"] for r in records] == ["aiot.test.web"], records
