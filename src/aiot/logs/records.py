"""The structured log record every producer's message becomes, and the stream's names.

Producers differ (the SDK sends `ts` as epoch seconds, the node agent an ISO string and a `stream` field, a
person may `nats pub` plain text), so parsing is tolerant of shape and strict about trust: the *subject* says
who published (NATS permissions let a workload publish only on `aiot.logs.<its id>`), so the workload id or
platform service named by the subject wins over whatever the body claims. Garbage (not UTF-8, empty, JSON that
is not an object, no message) raises `InvalidLogRecord`; `try_parse` turns that into None so a consumer never
crashes on one bad message.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

STREAM = "AIOT_LOGS"
SUBJECT_PREFIX = "aiot.logs"
SUBJECTS = f"{SUBJECT_PREFIX}.>"
PLATFORM_TOKEN = "platform"  # aiot.logs.platform.<service>; workload ids (wl_…) never equal it
MAX_MESSAGE = 32_000  # characters kept of one message (a huge traceback is cut, not dropped)
MAX_EXTRA_KEYS = 50

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_LEVEL_ALIASES = {
    "WARN": "WARNING",
    "FATAL": "CRITICAL",
    "ERR": "ERROR",
    "CRIT": "CRITICAL",
    "TRACE": "DEBUG",
    "NOTICE": "INFO",
    "INFORMATION": "INFO",
    "STDOUT": "INFO",
    "STDERR": "WARNING",
}
_KNOWN = {
    "ts",
    "time",
    "timestamp",
    "level",
    "levelname",
    "service",
    "workload_id",
    "app_instance_id",
    "node_id",
    "logger",
    "name",
    "message",
    "msg",
    "extra",
}


class InvalidLogRecord(ValueError):
    """A message on the log subjects that cannot be a log record (says why)."""


class LogRecord(BaseModel):
    """One log line, normalised: aware UTC time, a standard level name, who wrote it, the text, extra fields."""

    ts: datetime
    level: str = "INFO"
    service: str = "workload"
    workload_id: str | None = None
    app_instance_id: str | None = None
    node_id: str | None = None
    logger: str | None = None
    message: str
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def levelno(self) -> int:
        return LEVELS.get(self.level, 20)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (ISO time) in a stable key order: archives of the same records are byte-identical."""
        return self.model_dump(mode="json")


def workload_subject(workload_id: str) -> str:
    return f"{SUBJECT_PREFIX}.{workload_id}"


NODE_LOGS = "aiot.node.*.logs.*"
"""Where node agents send their workloads' output, for the log relay to check (`relay.py`)."""


def node_log_subject(node_id: str, workload_id: str) -> str:
    """Where a node agent publishes a line of `workload_id`'s output."""
    return f"aiot.node.{node_id}.logs.{workload_id}"


def node_log_permission(node_id: str) -> str:
    """The publish permission a node's NATS user gets for its workloads' output."""
    return f"aiot.node.{node_id}.logs.*"


def platform_subject(service: str) -> str:
    return f"{SUBJECT_PREFIX}.{PLATFORM_TOKEN}.{service}"


def subject_source(subject: str | None) -> tuple[str | None, str | None]:
    """(workload_id, platform service) named by a log subject; (None, None) for any other subject."""
    if not subject:
        return None, None
    parts = subject.split(".")
    if len(parts) == 3 and parts[:2] == ["aiot", "logs"] and parts[2] != PLATFORM_TOKEN:
        return parts[2], None
    if len(parts) == 4 and parts[:3] == ["aiot", "logs", PLATFORM_TOKEN]:
        return None, parts[3]
    return None, None


def normalise_level(value: Any) -> str:
    """'warn', 'Warning', 30, '30' -> 'WARNING'; unknown text -> 'INFO' (tolerant: a record is not lost for it)."""
    if isinstance(value, bool):
        return "INFO"
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(float(value))
        name = "DEBUG"
        for level_name, level_no in LEVELS.items():
            if number >= level_no:
                name = level_name
        return name
    if isinstance(value, str):
        text = value.strip().upper()
        text = _LEVEL_ALIASES.get(text, text)
        if text in LEVELS:
            return text
    return "INFO"


def parse_level(value: str) -> str:
    """A level given by a person (query filter): strict, a clear error naming what is accepted."""
    text = _LEVEL_ALIASES.get(value.strip().upper(), value.strip().upper())
    if text not in LEVELS:
        raise ValueError(f"unknown log level {value!r}; expected one of {', '.join(LEVELS)}")
    return text


def parse_time(value: Any, fallback: datetime | None = None) -> datetime:
    """Epoch seconds (or milliseconds), an ISO string (naive = UTC, 'Z' accepted) or a datetime -> aware UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = value / 1000 if value > 1e11 else value  # milliseconds from JavaScript-ish senders
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return parse_time(float(text), fallback)
        except ValueError:
            pass
        try:
            return parse_time(datetime.fromisoformat(text.replace("Z", "+00:00")), fallback)
        except ValueError:
            pass
    if fallback is not None:
        return fallback
    return datetime.now(UTC)


def _text(value: Any, limit: int = 200) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


def parse_record(data: bytes | str, *, subject: str | None = None, received: datetime | None = None) -> LogRecord:
    """Normalise one published log message. `received` (e.g. the stream's time) is used when `ts` is missing."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidLogRecord(f"log message is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    else:
        text = data
    if not text.strip():
        raise InvalidLogRecord("log message is empty")
    body: dict[str, Any]
    stripped = text.lstrip()
    if stripped.startswith(("{", "[", '"')) or stripped in ("null", "true", "false"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidLogRecord(f"log message looks like JSON but is not valid: {exc.msg} at {exc.pos}") from exc
        if not isinstance(parsed, dict):
            raise InvalidLogRecord(f"log message must be a JSON object, got {type(parsed).__name__}")
        body = parsed
    else:
        body = {"message": text.rstrip("\r\n")}  # plain text line: kept, as INFO
    message = body.get("message", body.get("msg"))
    if message is None or (isinstance(message, str) and not message.strip()):
        raise InvalidLogRecord("log record has no 'message'")
    if not isinstance(message, str):
        message = json.dumps(message, default=str)
    extra: dict[str, Any] = {}
    if isinstance(body.get("extra"), dict):
        extra.update(body["extra"])
    extra.update({k: v for k, v in body.items() if k not in _KNOWN})
    extra = dict(list(extra.items())[:MAX_EXTRA_KEYS])
    subject_workload, subject_service = subject_source(subject)
    workload_id = _text(body.get("workload_id"), 64)
    service = _text(body.get("service"), 64) or "workload"
    if subject_workload is not None:
        if workload_id and workload_id != subject_workload:
            extra["claimed_workload_id"] = workload_id
        workload_id, service = subject_workload, "workload"
    elif subject_service is not None:
        service = subject_service
    return LogRecord(
        ts=parse_time(body.get("ts", body.get("time", body.get("timestamp"))), received),
        level=normalise_level(body.get("level", body.get("levelname"))),
        service=service,
        workload_id=workload_id,
        app_instance_id=_text(body.get("app_instance_id"), 64),
        node_id=_text(body.get("node_id"), 64),
        logger=_text(body.get("logger", body.get("name"))),
        message=message[:MAX_MESSAGE],
        extra=_json_safe(extra),
    )


def try_parse(data: bytes | str, *, subject: str | None = None, received: datetime | None = None) -> LogRecord | None:
    try:
        return parse_record(data, subject=subject, received=received)
    except InvalidLogRecord:
        return None


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    safe = json.loads(json.dumps(value, default=str))
    return safe if isinstance(safe, dict) else {}
