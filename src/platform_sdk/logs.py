"""`get_logger()`: a stdlib logger whose records go to the platform's log stream as JSON.

Record format (one NATS message on `log_subject` per record):
`{"ts", "level", "service": "workload", "workload_id", "app_instance_id", "logger", "message"}`; `ts` is
epoch seconds (float), a traceback is appended to `message`. While NATS is unreachable records wait in a
bounded buffer (10 000; the oldest are dropped and a WARNING says how many). Records are also written to
stderr when the config has no `log_subject` (local development), so nothing is lost silently.
"""

from __future__ import annotations

import json
import logging

from platform_sdk.runtime import config, runtime

_HANDLER_ATTR = "_platform_sdk_handler"


class PlatformLogHandler(logging.Handler):
    """Formats records as the platform's JSON log line and hands them to the runtime's shipping buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.rt = runtime()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            elif record.stack_info:
                message = f"{message}\n{record.stack_info}"
            cfg = self.rt.cfg
            body = {
                "ts": record.created,
                "level": record.levelname,
                "service": "workload",
                "workload_id": cfg.workload_id,
                "app_instance_id": cfg.app_instance_id,
                "logger": record.name,
                "message": message,
            }
            self.rt.add_log(json.dumps(body, default=str).encode())
        except Exception:  # noqa: BLE001 - logging must never raise into app code
            self.handleError(record)


def get_logger(name: str | None = None) -> logging.Logger:
    """A logger (default name: the app or model package name) whose records reach the platform's log stream.

    Level INFO by default (change it with `.setLevel`). Records do not propagate to the root logger, so
    they are not printed twice (stdout/stderr are captured by the agent too)."""
    cfg = config()
    logger = logging.getLogger(name or cfg.package.get("name") or "app")
    if not getattr(logger, _HANDLER_ATTR, False):
        if cfg.log_subject:
            logger.addHandler(PlatformLogHandler())
        else:
            runtime()
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        setattr(logger, _HANDLER_ATTR, True)
    return logger
