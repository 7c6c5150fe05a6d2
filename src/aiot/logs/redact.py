"""Keep secrets out of the log stream: values of secret-looking keys, our token formats, passwords in URLs.

Logs are readable by many (admins, owners, archives kept for months), so a platform process must never ship a
credential in one. Token ids are kept (`aiot.tok_AbC….***`): they name the token without letting anyone use it.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|authori[sz]ation|credential|private[_-]?key|"
    r"cookie|session",
    re.IGNORECASE,
)
# aiot.<id>.<secret>, aiotnode.<id>.<secret>, aiotjoin.<id>.<secret> (see accounts.tokens, deployer.nodes).
_TOKEN = re.compile(r"\b(aiot(?:node|join)?\.[A-Za-z0-9]+_[A-Za-z0-9]+)\.[A-Za-z0-9_\-]+")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/\s@]+):[^@/\s]+@")
_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w\-]*(?:pass(?:word|wd)?|secret|token|api[_-]?key|credential)[\w\-]*)"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/\-]+=*", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    """`text` with tokens, URL passwords, `password=...`-style values and Authorization values masked."""
    text = _TOKEN.sub(rf"\1.{MASK}", text)
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    # A token already masked above keeps its id (useful to find and revoke it); other values go entirely.
    return _KEY_VALUE.sub(lambda m: m[0] if m["value"].endswith(f".{MASK}") else f"{m['key']}{m['sep']}{MASK}", text)


def redact(value: Any, depth: int = 0) -> Any:
    """Redact a JSON-like value: secret keys' values masked whatever they are, strings scanned, depth bounded."""
    if depth > 8:
        return MASK
    if isinstance(value, dict):
        return {
            str(k): MASK if is_secret_key(str(k)) and v not in (None, "") else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))
